from django.urls import path

from pipelines_app import views

app_name = "pipelines"

urlpatterns = [
    path("", views.home, name="home"),
]
