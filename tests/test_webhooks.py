"""Word when work is done (issue 17): webhooks per workspace, delivered by a dramatiq actor
after the run's end commits, signed with HMAC-SHA256, retried with backoff, each attempt
logged; never to the server's own network (after DNS and after each redirect, connecting to
the address checked) unless STEPWORKS_WEBHOOK_ALLOW_PRIVATE is on.

The receivers are real HTTP servers the tests start on loopback, so the tests that deliver
turn the private-address setting on; the ones that check the refusal leave it off."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from runs_app import retention, scheduler
from runs_app.dispatch import EmbeddedWorkers
from runs_app.models import (
    DeliveryStatus,
    PipelineRun,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from runs_app.sweeps import services as sweep_services
from runs_app.webhooks import outbound, services
from tests.helpers import wait_runs, wait_until
from tests.test_api_support import api_client, error_of, small_pipeline
from workspaces.models import AuditEntry, AuditVerb

FAST = {"WEBHOOK_BACKOFF_S": 0.05, "WEBHOOK_TIMEOUT_S": 5.0, "WEBHOOK_ATTEMPTS": 5}


class Receiver:
    """An HTTP server on loopback that records every request and answers with `answers`
    in turn (then 200); `redirect` makes it answer 307 to that URL instead."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.redirect: str | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.requests.append(
                    {"headers": dict(self.headers), "body": self.rfile.read(length)}
                )
                if receiver.redirect:
                    self.send_response(307)
                    self.send_header("Location", receiver.redirect)
                else:
                    self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def fast(settings: Any) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, **FAST}


@pytest.fixture
def private_allowed(settings: Any, fast: None) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "WEBHOOK_ALLOW_PRIVATE": True}


def verified(request: dict[str, Any], secret: str) -> dict[str, Any]:
    """The request's JSON body, after checking its signature as the README says to."""
    sent = request["headers"]["X-Stepworks-Signature"]
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sent, expected)
    body: dict[str, Any] = json.loads(request["body"])
    return body


def owner_client(world: Any) -> Client:
    client = Client()
    client.force_login(world.owner)
    return client


def hook(world: Any, url: str, events: list[str]) -> Webhook:
    return services.webhook_create(world.workspace, url, events, actor=world.owner)


def delivered(delivery: WebhookDelivery, timeout: float = 30) -> WebhookDelivery:
    over = (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)
    assert wait_until(
        lambda: WebhookDelivery.objects.filter(pk=delivery.pk, status__in=over).exists(), timeout
    ), list(delivery.tries.values_list("number", "status_code", "error"))
    delivery.refresh_from_db()
    return delivery


# --- adding one -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_owner_adds_a_webhook_with_a_fresh_secret_and_it_is_recorded(world: Any) -> None:
    response = owner_client(world).post(
        "/w/lab/webhooks/",
        {"action": "create", "url": "https://hooks.example.com/x", "events": ["run.failed"]},
    )

    assert response.status_code == 302
    webhook = Webhook.objects.get()
    assert (webhook.url, webhook.events, webhook.created_by) == (
        "https://hooks.example.com/x",
        ["run.failed"],
        world.owner,
    )
    assert len(webhook.secret) == 64
    assert webhook.secret in owner_client(world).get("/w/lab/webhooks/").content.decode()
    assert AuditEntry.objects.get(verb=AuditVerb.WEBHOOK_CREATED).target == webhook.url


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://localhost/hook", "localhost is a loopback address"),
        ("ftp://hooks.example.com/x", "only http:// and https://"),
        ("https://user:pw@hooks.example.com/x", "no user name or password"),
    ],
)
def test_a_url_at_a_private_address_is_refused_with_a_clear_error(
    world: Any, url: str, reason: str
) -> None:
    response = owner_client(world).post(
        "/w/lab/webhooks/", {"action": "create", "url": url, "events": ["run.finished"]}
    )

    assert response.status_code == 400
    assert reason in response.content.decode()
    assert not Webhook.objects.exists()


@pytest.mark.django_db
def test_with_private_addresses_allowed_a_loopback_url_is_taken(
    world: Any, private_allowed: None
) -> None:
    webhook = hook(world, "http://127.0.0.1:9/hook", ["run.finished"])

    assert webhook.pk is not None


@pytest.mark.django_db
def test_a_webhook_needs_known_events(world: Any) -> None:
    response = owner_client(world).post(
        "/w/lab/webhooks/", {"action": "create", "url": "https://h.example.com/", "events": ["x"]}
    )

    assert response.status_code == 400
    assert "one or more of run.finished" in response.content.decode()


@pytest.mark.django_db
def test_deleting_a_webhook_is_recorded_and_another_workspace_s_is_a_404(world: Any) -> None:
    mine = hook(world, "https://hooks.example.com/x", ["run.finished"])
    theirs = services.webhook_create(
        world.other_workspace, "https://h.example.com/", ["run.finished"], actor=world.stranger
    )
    client = owner_client(world)

    other = client.post("/w/lab/webhooks/", {"action": "delete", "webhook": theirs.pk})
    deleted = client.post("/w/lab/webhooks/", {"action": "delete", "webhook": mine.pk})

    assert other.status_code == 404
    assert deleted.status_code == 302
    assert list(Webhook.objects.values_list("pk", flat=True)) == [theirs.pk]
    assert AuditEntry.objects.filter(verb=AuditVerb.WEBHOOK_DELETED).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("n", [1, 20])
def test_the_webhooks_page_costs_the_same_for_1_or_20_webhooks_with_deliveries(
    world: Any, django_assert_num_queries: Any, private_allowed: None, n: int
) -> None:
    for i in range(n):
        webhook = hook(world, f"http://127.0.0.1:9/{i}", ["run.finished"])
        for j in range(3):
            delivery = WebhookDelivery.objects.create(
                webhook=webhook, event="ping", subject=f"s{j}", payload={}
            )
            WebhookAttempt.objects.create(delivery=delivery, number=1, status_code=500)
    client = owner_client(world)

    # session, user, workspace, webhooks, their recent deliveries, the deliveries' attempts
    with django_assert_num_queries(6):
        response = client.get("/w/lab/webhooks/")

    assert response.content.decode().count('data-status-code="500"') == 3 * n


# --- the API ----------------------------------------------------------------------------------

API = "/api/v1/workspaces/lab/webhooks"


@pytest.mark.django_db
def test_an_owner_adds_lists_and_deletes_a_webhook_through_the_api(world: Any) -> None:
    client = api_client(world.owner)

    made = client.post(
        f"{API}/create/",
        {"url": "https://hooks.example.com/x", "events": ["run.failed", "sweep.finished"]},
        format="json",
    )
    listed = client.get(f"{API}/")
    webhook = Webhook.objects.get()
    deleted = client.post(f"{API}/{webhook.pk}/delete/")
    again = client.post(f"{API}/{webhook.pk}/delete/")

    assert made.status_code == 201
    assert made.json()["secret"] == webhook.secret and len(webhook.secret) == 64
    assert (made.json()["url"], made.json()["events"]) == (
        "https://hooks.example.com/x",
        ["run.failed", "sweep.finished"],
    )
    assert listed.json()["count"] == 1
    assert listed.json()["results"][0]["created_by"] == "olivia"
    assert "secret" not in listed.json()["results"][0]  # shown once, and on the page
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": webhook.pk})
    assert again.status_code == 404
    assert not Webhook.objects.exists()
    assert verbs_of(world) == [AuditVerb.WEBHOOK_CREATED, AuditVerb.WEBHOOK_DELETED]


def verbs_of(world: Any) -> list[str]:
    entries = AuditEntry.objects.filter(workspace=world.workspace, verb__startswith="webhook.")
    entries = entries.order_by("id")
    return list(entries.values_list("verb", flat=True))


@pytest.mark.django_db
def test_the_api_refuses_a_private_url_and_unknown_events_naming_the_field(world: Any) -> None:
    client = api_client(world.owner)

    private = client.post(
        f"{API}/create/", {"url": "http://10.1.2.3/hook", "events": ["run.finished"]}, format="json"
    )
    unknown = client.post(
        f"{API}/create/", {"url": "https://h.example.com/", "events": ["x"]}, format="json"
    )
    none = client.post(
        f"{API}/create/", {"url": "https://h.example.com/", "events": []}, format="json"
    )

    assert private.status_code == 400
    assert list(error_of(private)["fields"]) == ["url"]
    assert error_of(private)["fields"]["url"][0].startswith("10.1.2.3 is a private address: ")
    assert (unknown.status_code, none.status_code) == (400, 400)
    assert error_of(unknown)["fields"] == {"events.0": ['"x" is not a valid choice.']}
    assert "events" in error_of(none)["fields"]
    assert not Webhook.objects.exists()


@pytest.mark.django_db
def test_editors_viewers_and_strangers_reach_no_webhook_through_the_api(world: Any) -> None:
    mine = hook(world, "https://hooks.example.com/x", ["run.finished"])
    theirs = services.webhook_create(
        world.other_workspace, "https://h.example.com/", ["run.finished"], actor=world.stranger
    )
    body = {"url": "https://h.example.com/y", "events": ["run.finished"]}

    for user in (world.editor, world.viewer):
        client = api_client(user)
        assert client.get(f"{API}/").status_code == 403
        assert client.post(f"{API}/create/", body, format="json").status_code == 403
        assert client.post(f"{API}/{mine.pk}/delete/").status_code == 403
        assert client.post(f"{API}/{mine.pk}/test/").status_code == 403
        assert client.get(f"{API}/{mine.pk}/deliveries/").status_code == 403
    stranger = api_client(world.stranger)
    assert stranger.get(f"{API}/").status_code == 404
    assert stranger.post(f"{API}/{mine.pk}/delete/").status_code == 404
    owner = api_client(world.owner)  # another workspace's webhook, by its id: not here
    assert owner.post(f"{API}/{theirs.pk}/delete/").status_code == 404
    assert owner.post(f"{API}/{theirs.pk}/test/").status_code == 404
    assert owner.get(f"{API}/{theirs.pk}/deliveries/").status_code == 404
    assert Webhook.objects.count() == 2
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db
def test_a_test_through_the_api_is_queued_and_shows_in_the_delivery_log(
    world: Any, private_allowed: None
) -> None:
    webhook = hook(world, "http://127.0.0.1:9/hook", ["run.finished"])
    client = api_client(world.owner)

    sent = client.post(f"{API}/{webhook.pk}/test/")
    log = client.get(f"{API}/{webhook.pk}/deliveries/").json()

    assert sent.status_code == 202
    assert (sent.json()["event"], sent.json()["status"], sent.json()["tries"]) == (
        "ping",
        "pending",
        [],
    )
    assert [d["id"] for d in log["results"]] == [sent.json()["id"]]


@pytest.mark.django_db(transaction=True)
def test_a_test_sent_through_the_api_arrives_signed_with_the_secret_it_answered(
    world: Any, embedded_workers: Any, receiver: Receiver, private_allowed: None
) -> None:
    client = api_client(world.owner)
    made = client.post(
        f"{API}/create/", {"url": receiver.url, "events": ["run.finished"]}, format="json"
    ).json()

    sent = client.post(f"{API}/{made['id']}/test/").json()
    delivered(WebhookDelivery.objects.get(pk=sent["id"]))
    log = client.get(f"{API}/{made['id']}/deliveries/").json()

    assert verified(receiver.requests[0], made["secret"])["event"] == "ping"
    assert log["results"][0]["status"] == "delivered"
    assert log["results"][0]["tries"][0]["status_code"] == 200


@pytest.mark.django_db
@pytest.mark.parametrize("n", [1, 20])
def test_the_webhook_list_and_delivery_log_apis_cost_a_pinned_number_of_queries(
    world: Any, django_assert_num_queries: Any, private_allowed: None, n: int
) -> None:
    for i in range(n):
        webhook = hook(world, f"http://127.0.0.1:9/{i}", ["run.finished"])
        delivery = WebhookDelivery.objects.create(webhook=webhook, event="ping", payload={})
        WebhookAttempt.objects.create(delivery=delivery, number=1, status_code=500)
        WebhookAttempt.objects.create(delivery=delivery, number=2, status_code=200)
    first = Webhook.objects.order_by("id").first()
    assert first is not None
    for _ in range(n - 1):
        delivery = WebhookDelivery.objects.create(webhook=first, event="ping", payload={})
        WebhookAttempt.objects.create(delivery=delivery, number=1, status_code=200)
    client = api_client(world.owner)

    # the token with its user, workspace with role, count, webhooks with makers
    with django_assert_num_queries(4):
        hooks = client.get(f"{API}/?limit=100").json()
    # the token, workspace with role, the webhook, count, deliveries, their attempts
    with django_assert_num_queries(6):
        log = client.get(f"{API}/{first.pk}/deliveries/?limit=100").json()

    assert hooks["count"] == n
    assert log["count"] == n
    assert sum(len(d["tries"]) for d in log["results"]) == n + 1


# --- the delivery log is pruned -------------------------------------------------------------


@pytest.mark.django_db
def test_the_periodic_pass_prunes_finished_deliveries_past_the_log_days(
    world: Any, private_allowed: None, settings: Any
) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "WEBHOOK_LOG_DAYS": 30}
    webhook = hook(world, "http://127.0.0.1:9/hook", ["run.finished"])
    now = timezone.now()

    def delivery(status: str, finished_days_ago: float | None) -> WebhookDelivery:
        finished = None if finished_days_ago is None else now - timedelta(days=finished_days_ago)
        made = WebhookDelivery.objects.create(
            webhook=webhook, event="ping", payload={}, status=status, finished_at=finished
        )
        WebhookAttempt.objects.create(delivery=made, number=1, status_code=500)
        return made

    old_delivered = delivery(DeliveryStatus.DELIVERED, 31)
    old_failed = delivery(DeliveryStatus.FAILED, 45)
    recent = delivery(DeliveryStatus.DELIVERED, 29)
    pending = delivery(DeliveryStatus.PENDING, None)
    WebhookDelivery.objects.filter(pk=pending.pk).update(created_at=now - timedelta(days=60))

    retention.retention_apply_all()  # what each worker runs every STEPWORKS_GC_S

    kept = set(WebhookDelivery.objects.values_list("pk", flat=True))
    assert kept == {recent.pk, pending.pk}
    assert not WebhookAttempt.objects.filter(delivery_id__in=[old_delivered.pk, old_failed.pk])
    assert WebhookAttempt.objects.count() == 2


@pytest.mark.django_db
def test_with_log_days_0_no_delivery_is_pruned(
    world: Any, private_allowed: None, settings: Any
) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "WEBHOOK_LOG_DAYS": 0}
    webhook = hook(world, "http://127.0.0.1:9/hook", ["run.finished"])
    WebhookDelivery.objects.create(
        webhook=webhook,
        event="ping",
        payload={},
        status=DeliveryStatus.DELIVERED,
        finished_at=timezone.now() - timedelta(days=3650),
    )

    assert services.deliveries_prune() == 0
    assert WebhookDelivery.objects.count() == 1


# --- the outbound request ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("100.64.0.1", "non-public"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "reserved"),
    ],
)
def test_every_off_limits_address_is_refused_after_resolving(address: str, kind: str) -> None:
    with pytest.raises(outbound.Refused, match=f"an? {kind} address"):
        outbound.resolve(address, 80, allow_private=False)


def test_a_name_resolving_to_loopback_is_refused(monkeypatch: Any) -> None:
    with pytest.raises(outbound.Refused, match=r"localhost is at 127\.0\.0\.1, a loopback address"):
        outbound.resolve("localhost", 80, allow_private=False)


def test_a_public_address_resolves_to_itself() -> None:
    assert outbound.resolve("93.184.216.34", 443, allow_private=False) == "93.184.216.34"


def test_the_request_goes_to_the_address_checked_with_the_url_s_host(
    receiver: Receiver, monkeypatch: Any
) -> None:
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def pinned(host: str, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        return real("127.0.0.1" if host == "hooks.example.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", pinned)

    answer = outbound.post(
        f"http://hooks.example.test:{receiver.port}/x", b"{}", {}, timeout=5, allow_private=True
    )

    assert answer.status == 200
    names = [host for host in looked_up if not host[0].isdigit()]
    assert names == ["hooks.example.test"]  # resolved once, by us; then its address is used
    assert receiver.requests[0]["headers"]["Host"] == f"hooks.example.test:{receiver.port}"


def test_a_redirect_to_an_off_limits_address_is_refused_before_it_is_followed(
    receiver: Receiver, monkeypatch: Any
) -> None:
    # 127.0.0.1 (the receiver) passes as public here; the redirect's 127.0.0.2 does not.
    real_kind = outbound._kind
    monkeypatch.setattr(
        outbound,
        "_kind",
        lambda address: None if str(address) == "127.0.0.1" else real_kind(address),
    )
    receiver.redirect = f"http://127.0.0.2:{receiver.port}/inside"

    refusal = r"127\.0\.0\.2 is at 127\.0\.0\.2, a loopback address"
    with pytest.raises(outbound.Refused, match=refusal):
        outbound.post(receiver.url, b"{}", {}, timeout=5, allow_private=False)

    assert len(receiver.requests) == 1  # the first hop only


def test_redirects_are_followed_a_few_times_at_most(receiver: Receiver) -> None:
    receiver.redirect = receiver.url

    with pytest.raises(outbound.Refused, match="more than 3 redirects"):
        outbound.post(receiver.url, b"{}", {}, timeout=5, allow_private=True)

    assert len(receiver.requests) == 4


def test_a_receiver_that_does_not_answer_times_out() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        with pytest.raises(OSError, match="timed out"):
            outbound.post(
                f"http://127.0.0.1:{silent.getsockname()[1]}/",
                b"{}",
                {},
                timeout=0.3,
                allow_private=True,
            )
    finally:
        silent.close()


# --- delivered by the actor -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_finished_run_is_delivered_signed_with_its_status_url_and_metrics(
    world: Any, embedded_workers: Any, receiver: Receiver, private_allowed: None
) -> None:
    finished = hook(world, receiver.url, ["run.finished"])
    failures_only = hook(world, receiver.url + "?failures", ["run.failed"])
    version = small_pipeline(world.workspace, world.editor)

    run = scheduler.run_create(version, user=world.editor)
    wait_runs(run)
    assert wait_until(lambda: WebhookDelivery.objects.filter(webhook=finished).exists())
    delivery = delivered(WebhookDelivery.objects.get(webhook=finished))

    assert run.status == "succeeded"
    assert delivery.status == DeliveryStatus.DELIVERED
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    body = verified(request, finished.secret)
    assert request["headers"]["X-Stepworks-Event"] == "run.finished"
    assert body["event"] == "run.finished"
    assert body["run"]["id"] == run.pk
    assert body["run"]["status"] == "succeeded"
    assert body["run"]["url"] == f"http://127.0.0.1:8000/w/lab/runs/{run.pk}/"
    assert body["run"]["metrics"]["train.total"] == 6.0  # sum(range(3)) * 2.0
    assert body["run"]["started_by"] == "eddie"
    assert not WebhookDelivery.objects.filter(webhook=failures_only).exists()
    attempt = delivery.tries.get()
    assert (attempt.status_code, attempt.error) == (200, "")


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_answers_500_three_times_is_retried_and_the_log_shows_it(
    world: Any, embedded_workers: Any, receiver: Receiver, private_allowed: None
) -> None:
    webhook = hook(world, receiver.url, ["run.finished"])
    receiver.answers = [500, 500, 500]
    client = owner_client(world)

    sent = client.post("/w/lab/webhooks/", {"action": "test", "webhook": webhook.pk})
    delivery = delivered(WebhookDelivery.objects.get(webhook=webhook))
    page = client.get("/w/lab/webhooks/").content.decode()

    assert sent.status_code == 302
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 4
    assert list(delivery.tries.values_list("number", "status_code", "error")) == [
        (1, 500, "answered 500"),
        (2, 500, "answered 500"),
        (3, 500, "answered 500"),
        (4, 200, ""),
    ]
    bodies = [verified(r, webhook.secret) for r in receiver.requests]
    assert [b["attempt"] for b in bodies] == [1, 2, 3, 4]
    assert {b["event"] for b in bodies} == {"ping"}
    assert page.count('data-status-code="500"') == 3
    assert page.count('data-status-code="200"') == 1


@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_given_up_after_its_attempts(
    world: Any, embedded_workers: Any, receiver: Receiver, private_allowed: None, settings: Any
) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "WEBHOOK_ATTEMPTS": 2}
    webhook = hook(world, receiver.url, ["run.finished"])
    receiver.answers = [503] * 5

    delivery = delivered(services.webhook_test(webhook, actor=world.owner))

    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.tries.count() == 2
    assert len(receiver.requests) == 2


@pytest.mark.django_db(transaction=True)
def test_with_private_addresses_off_the_delivery_is_refused_once_and_never_sent(
    world: Any, embedded_workers: Any, receiver: Receiver, fast: None, settings: Any
) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "WEBHOOK_ALLOW_PRIVATE": True}
    webhook = hook(world, receiver.url, ["run.finished"])  # taken while it was allowed
    settings.STEPWORKS = {**settings.STEPWORKS, "WEBHOOK_ALLOW_PRIVATE": False}

    delivery = delivered(services.webhook_test(webhook, actor=world.owner))

    assert delivery.status == DeliveryStatus.FAILED
    attempt = delivery.tries.get()
    assert attempt.status_code is None
    assert "refused: 127.0.0.1 is at 127.0.0.1, a loopback address" in attempt.error
    assert receiver.requests == []


@pytest.mark.django_db(transaction=True)
def test_a_sweep_is_announced_once_when_its_last_run_ends(
    world: Any, embedded_workers: Any, receiver: Receiver, private_allowed: None
) -> None:
    webhook = hook(world, receiver.url, ["sweep.finished"])
    base = small_pipeline(world.workspace, world.editor)
    axes = {
        "train": [
            {"label": "x1", "params": {"scale": 1.0}},
            {"label": "x3", "params": {"scale": 3.0}},
        ]
    }

    sweep = sweep_services.sweep_create(base, name="scales", axes=axes, user=world.editor)
    wait_runs(*PipelineRun.objects.filter(sweep=sweep))
    assert wait_until(lambda: WebhookDelivery.objects.filter(webhook=webhook).exists())
    delivery = delivered(WebhookDelivery.objects.get(webhook=webhook))

    body = verified(receiver.requests[0], webhook.secret)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert body["event"] == "sweep.finished"
    assert body["sweep"]["id"] == sweep.pk
    assert body["sweep"]["runs"] == {"succeeded": 2}
    assert WebhookDelivery.objects.filter(webhook=webhook).count() == 1


@pytest.mark.django_db
def test_the_same_end_announced_twice_makes_one_delivery(world: Any, private_allowed: None) -> None:
    webhook = hook(world, "http://127.0.0.1:9/", ["run.finished", "run.failed"])
    run = scheduler.run_create(small_pipeline(world.workspace), user=world.owner)
    PipelineRun.objects.filter(pk=run.pk).update(status="failed", failure_reason="user_error")

    services.on_run_finished(None, run_id=run.pk, status="failed")
    services.on_run_finished(None, run_id=run.pk, status="failed")

    events = sorted(WebhookDelivery.objects.filter(webhook=webhook).values_list("event", flat=True))
    assert events == ["run.failed", "run.finished"]


@pytest.mark.django_db(transaction=True)
def test_a_delivery_whose_message_died_with_its_process_is_sent_by_the_next_dispatcher(
    world: Any, receiver: Receiver, private_allowed: None
) -> None:
    webhook = hook(world, receiver.url, ["run.finished"])
    # As a `run_pipeline --wait` leaves it: the row committed, its message gone with the
    # process's in-memory broker.
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        event="run.finished",
        subject="run:1",
        payload={"event": "run.finished"},
        next_attempt_at=timezone.now() - timedelta(minutes=5),
    )
    later = WebhookDelivery.objects.create(  # a retry due in a while: not sent before then
        webhook=webhook,
        event="run.finished",
        subject="run:2",
        payload={},
        next_attempt_at=timezone.now() + timedelta(minutes=10),
    )

    workers = EmbeddedWorkers(threads=1)
    workers.start()
    try:
        done = delivered(delivery)
    finally:
        workers.stop()

    assert done.status == DeliveryStatus.DELIVERED
    assert len(receiver.requests) == 1
    later.refresh_from_db()
    assert (later.status, later.attempts) == (DeliveryStatus.PENDING, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["http://hooks.example.com:99999/", "http://hooks.exa\x00mple.com/", "http://[::1/"]
)
def test_a_malformed_url_is_a_field_error_not_a_500(world: Any, url: str) -> None:
    response = owner_client(world).post(
        "/w/lab/webhooks/", {"action": "create", "url": url, "events": ["run.finished"]}
    )

    assert response.status_code == 400
    assert not Webhook.objects.exists()


@pytest.mark.django_db
def test_text_no_column_can_store_is_refused_on_the_members_page(world: Any) -> None:
    client = owner_client(world)

    renamed = client.post("/w/lab/members/", {"action": "rename", "name": "bad\x00name"})
    added = client.post("/w/lab/members/", {"action": "set", "username": "x\x00", "role": "viewer"})

    assert renamed.status_code == added.status_code == 400
