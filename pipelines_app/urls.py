"""Design-time pages. Names and slugs are SlugFields, so `<slug:...>` matches every real one."""

from django.urls import path

from pipelines_app import views

app_name = "pipelines"

urlpatterns = [
    path("", views.home, name="home"),
    path("w/<slug:slug>/modules/<slug:name>/", views.module_detail, name="module"),
    path("w/<slug:slug>/modules/<slug:name>/diff/", views.module_diff, name="module_diff"),
    path(
        "w/<slug:slug>/modules/<slug:name>/<int:number>/",
        views.module_version_detail,
        name="module_version",
    ),
    path("w/<slug:slug>/pipelines/<slug:name>/", views.pipeline_detail, name="pipeline"),
    path("w/<slug:slug>/pipelines/<slug:name>/diff/", views.pipeline_diff, name="pipeline_diff"),
    path(
        "w/<slug:slug>/pipelines/<slug:name>/<int:number>/clone/",
        views.pipeline_clone,
        name="pipeline_clone",
    ),
    path(
        "w/<slug:slug>/pipelines/<slug:name>/<int:number>/update/",
        views.pipeline_update,
        name="pipeline_update",
    ),
]
