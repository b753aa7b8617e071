"""The team pages' forms: a new workspace, a member, an invite, sign-up by invite, and the
audit trail's filters. They validate shapes; the services decide (and raise DomainError)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm, UsernameField

from workspaces.invites import MAX_DAYS, MAX_USES
from workspaces.models import AuditVerb, Role
from workspaces.services import SLUG_HELP, SLUG_RE


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="What people see: “Vision team”.")
    slug = forms.RegexField(
        SLUG_RE,
        max_length=64,
        help_text=f"In every URL and for the CLI: {SLUG_HELP}.",
        error_messages={"invalid": SLUG_HELP},
    )


class RenameForm(forms.Form):
    name = forms.CharField(max_length=200)


class MemberForm(forms.Form):
    who = forms.CharField(max_length=254, label="Username or email")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class InviteForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)
    days = forms.IntegerField(min_value=1, max_value=MAX_DAYS, label="Valid for (days)")
    max_uses = forms.IntegerField(min_value=1, max_value=MAX_USES, label="Uses")
    email = forms.EmailField(
        required=False, label="Email (optional)", help_text="Mailed the link, when mail is set up."
    )


class SignUpForm(UserCreationForm):  # type: ignore[type-arg]
    """Username, email and a password checked by Django's validators (AUTH_PASSWORD_VALIDATORS)."""

    email = forms.EmailField(required=True)

    class Meta:
        model = get_user_model()
        fields = ("username", "email")
        field_classes = {"username": UsernameField}


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150)
    verb = forms.ChoiceField(required=False, choices=[("", "any"), *AuditVerb.choices])
    after = forms.DateField(required=False, label="From", widget=forms.DateInput({"type": "date"}))
    before = forms.DateField(
        required=False, label="Until", widget=forms.DateInput({"type": "date"})
    )

    def filters(self) -> dict[str, Any]:
        """The audit list's filter keyword arguments (an invalid field is left out)."""
        self.is_valid()  # cleaned_data then holds the fields that are valid
        data = getattr(self, "cleaned_data", {})
        out: dict[str, Any] = {}
        if data.get("actor"):
            out["actor_name"] = data["actor"]
        if data.get("verb"):
            out["verb"] = data["verb"]
        if data.get("after"):
            out["at__date__gte"] = data["after"]
        if data.get("before"):
            out["at__date__lte"] = data["before"]
        return out
