"""The smallest Django project: settings and URLs for the Django recipe in examples/."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "_django_site"
INSTALLED_APPS: list[str] = []
USE_TZ = True


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"served_by": "django"})


urlpatterns = [path("", hello)]
