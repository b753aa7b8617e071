"""The team pages: workspaces, members, invites, the audit trail."""

from django.urls import path

from workspaces import views

app_name = "workspaces"

urlpatterns = [
    path("workspaces/new/", views.workspace_new, name="new"),
    path("w/<slug:slug>/members/", views.members, name="members"),
    path("w/<slug:slug>/invites/", views.invites, name="invites"),
    path("w/<slug:slug>/audit/", views.audit, name="audit"),
    path("invite/<str:token>/", views.invite_open, name="invite"),
]
