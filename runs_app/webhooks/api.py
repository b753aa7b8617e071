"""The webhooks of a workspace through the API (owners only, as the page): list them, add
one (its secret is in that answer), delete one, send one a test, and read one's delivery log.
The writes go through runs_app.webhooks.services, as the page's do."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from runs_app.models import Webhook, WebhookAttempt, WebhookDelivery
from runs_app.webhooks import services
from workspaces.api import ApiMixin, workspace_of
from workspaces.models import Role, Workspace
from workspaces.selectors import one_or_404

EVENT_CHOICES = [(e.value, e.label) for e in services.EVENTS]


def webhook_of(request: Request, slug: str, webhook_id: int) -> tuple[Workspace, Webhook]:
    """The workspace (for an owner) and its webhook `webhook_id` (404 for another's)."""
    space = workspace_of(request, slug, Role.OWNER)
    hook = one_or_404(Webhook.objects.filter(workspace=space, pk=webhook_id), "webhook")
    hook.workspace = space
    return space, hook


class WebhookOutputSerializer(serializers.ModelSerializer[Webhook]):
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "active", "created_by", "created_at"]


class WebhookListApi(ApiMixin, generics.ListAPIView[Webhook]):
    """The workspace's webhooks, oldest first (owners). Their secrets are not listed: each
    is in the answer that made it, and on the webhooks page."""

    queryset = Webhook.objects.none()
    serializer_class = WebhookOutputSerializer

    def get_queryset(self) -> QuerySet[Webhook]:
        space = workspace_of(self.request, self.kwargs["workspace"], Role.OWNER)
        return (
            Webhook.objects.filter(workspace=space)
            .select_related("created_by")
            .order_by("created_at", "id")
        )


class WebhookCreateApi(ApiMixin, APIView):
    """Add a webhook (owners): a URL and the events it wants (`run.finished`, `run.failed`,
    `sweep.finished`). The answer holds its `secret`, which signs every payload
    (`X-Stepworks-Signature: sha256=<HMAC-SHA256 of the body>`). A URL at a loopback,
    private or link-local address is refused (400 naming `url`) unless
    STEPWORKS_WEBHOOK_ALLOW_PRIVATE is on."""

    class InputSerializer(serializers.Serializer[Any]):
        url = serializers.CharField(max_length=2000)
        events = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_CHOICES), allow_empty=False
        )

    class OutputSerializer(WebhookOutputSerializer):
        class Meta(WebhookOutputSerializer.Meta):
            fields = [*WebhookOutputSerializer.Meta.fields, "secret"]

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.OWNER)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        hook = services.webhook_create(
            space, data.validated_data["url"], data.validated_data["events"], actor=request.user
        )
        return Response(self.OutputSerializer(hook).data, status=status.HTTP_201_CREATED)


class WebhookDeleteApi(ApiMixin, APIView):
    """Delete a webhook (owners), with its delivery log; pending deliveries are not sent."""

    class OutputSerializer(serializers.Serializer[Any]):
        deleted = serializers.IntegerField(help_text="the webhook's id")

    @extend_schema(request=None, responses={200: OutputSerializer})
    def post(self, request: Request, workspace: str, webhook_id: int) -> Response:
        _, hook = webhook_of(request, workspace, webhook_id)
        services.webhook_delete(hook, actor=request.user)
        return Response(self.OutputSerializer({"deleted": webhook_id}).data)


class DeliveryOutputSerializer(serializers.ModelSerializer[WebhookDelivery]):
    class AttemptSerializer(serializers.ModelSerializer[WebhookAttempt]):
        class Meta:
            model = WebhookAttempt
            fields = ["number", "status_code", "latency_ms", "error", "at"]

    tries = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "subject",
            "status",
            "attempts",
            "created_at",
            "finished_at",
            "tries",
        ]


class WebhookTestApi(ApiMixin, APIView):
    """Queue a test (`ping`) delivery to the webhook (owners); the worker sends it, never
    this request. 202 with the delivery, whose attempts its log then shows."""

    @extend_schema(request=None, responses={202: DeliveryOutputSerializer})
    def post(self, request: Request, workspace: str, webhook_id: int) -> Response:
        _, hook = webhook_of(request, workspace, webhook_id)
        delivery = services.webhook_test(hook, actor=request.user)
        return Response(DeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveryListApi(ApiMixin, generics.ListAPIView[WebhookDelivery]):
    """A webhook's delivery log, newest first (owners): each delivery's event, subject,
    status and attempts (status code, latency, error)."""

    queryset = WebhookDelivery.objects.none()
    serializer_class = DeliveryOutputSerializer

    def get_queryset(self) -> QuerySet[WebhookDelivery]:
        _, hook = webhook_of(self.request, self.kwargs["workspace"], self.kwargs["webhook_id"])
        return (
            WebhookDelivery.objects.filter(webhook=hook)
            .order_by("-created_at", "-id")
            .prefetch_related(Prefetch("tries", queryset=WebhookAttempt.objects.order_by("number")))
        )
