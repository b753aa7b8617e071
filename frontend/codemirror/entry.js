// Stepworks editor: CodeMirror 6 wrapped behind one global, window.StepworksEditor.
// Bundled into static/vendor/codemirror.min.js; rebuild (see static/vendor/README.md):
//   cd frontend/codemirror && npm ci && npx esbuild entry.js --bundle --minify \
//     --format=iife --legal-comments=external --outfile=../../static/vendor/codemirror.min.js
//
//   const ed = StepworksEditor.create(parentEl, {doc, language: "python"|"yaml"|"text",
//                                                readOnly, dark, onChange(text)});
//   ed.getValue(); ed.setValue(text); ed.setDiagnostics([{line, message, severity}]);
//   ed.focus(); ed.destroy();

import { basicSetup } from "codemirror";
import { EditorView } from "@codemirror/view";
import { Annotation, EditorState } from "@codemirror/state";
import { lintGutter, setDiagnostics } from "@codemirror/lint";
import { python } from "@codemirror/lang-python";
import { yaml } from "@codemirror/lang-yaml";
import { oneDark } from "@codemirror/theme-one-dark";

const CHANGE_DELAY_MS = 250;
const SEVERITIES = new Set(["error", "warning", "info"]);

// Marks transactions made by setValue, so they do not fire onChange.
const external = Annotation.define();

function languageExtension(name) {
  if (name === "python") return python();
  if (name === "yaml") return yaml();
  return [];
}

function create(parent, opts = {}) {
  const onChange = typeof opts.onChange === "function" ? opts.onChange : null;
  let timer = null;

  const extensions = [
    basicSetup,
    languageExtension(opts.language),
    lintGutter(),
    EditorView.editorAttributes.of({ class: "sw-editor" }),
  ];
  if (opts.dark) extensions.push(oneDark);
  if (opts.readOnly) extensions.push(EditorState.readOnly.of(true), EditorView.editable.of(false));
  if (onChange) {
    extensions.push(
      EditorView.updateListener.of((update) => {
        if (!update.docChanged) return;
        if (update.transactions.some((tr) => tr.annotation(external))) return;
        clearTimeout(timer);
        timer = setTimeout(() => onChange(view.state.doc.toString()), CHANGE_DELAY_MS);
      }),
    );
  }

  const view = new EditorView({
    parent,
    state: EditorState.create({ doc: opts.doc || "", extensions }),
  });

  return {
    getValue() {
      return view.state.doc.toString();
    },
    setValue(text) {
      clearTimeout(timer);
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: text || "" },
        annotations: external.of(true),
      });
    },
    setDiagnostics(list) {
      const doc = view.state.doc;
      const diagnostics = (list || []).map((d) => {
        const n = Math.min(Math.max(1, Math.floor(Number(d.line)) || 1), doc.lines);
        const line = doc.line(n);
        return {
          from: line.from,
          to: line.to,
          message: String(d.message || ""),
          severity: SEVERITIES.has(d.severity) ? d.severity : "error",
        };
      });
      view.dispatch(setDiagnostics(view.state, diagnostics));
    },
    focus() {
      view.focus();
    },
    destroy() {
      clearTimeout(timer);
      view.destroy();
    },
  };
}

window.StepworksEditor = { create };
