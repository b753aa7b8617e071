"""Sweeps: variant lists on steps, expanded into a Cartesian product of runs and compared.

plan (check and expand axes, pure), stats (compare what runs measured, pure), selectors
(reads), services (writes), forms and views (pages), serializers and api (REST), charts
(figures). The models (Sweep, SweepEvent) stay in runs_app.models.
"""
