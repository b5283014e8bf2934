import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

from .streams import fraud_stream, trip_stream

TARGETS = {"tfd": "is_fraud", "eta": "simulated_actual_travel_time_seconds"}


@pytest.mark.parametrize("case", ["tfd", "eta", "ecci"])
def test_sample_predict_status_cycle(client, case):
    sample = client.get(f"/api/v1/{case}/sample", params={"seed": 5}).json()
    again = client.get(f"/api/v1/{case}/sample", params={"seed": 5}).json()
    first_id = next(iter(sample))
    assert again[first_id] == sample[first_id]  # a seeded sample is reproducible
    r = client.post(f"/api/v1/{case}/predict", json=sample)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["case"] == case and body["prediction"]
    status = client.get(f"/api/v1/{case}/status").json()
    assert status["loaded"] is True and status["predictions_served"] == 1 and status["samples_learned"] == 0
    assert status["topic"] and status["model"]


def test_learn_updates_status_metrics_and_recent_predictions(client):
    events = list(fraud_stream(1, 30))
    for event in events:
        assert client.post("/api/v1/tfd/learn", json=event).status_code == 200
    status = client.get("/api/v1/tfd/status").json()
    assert status["samples_learned"] == 30 and status["last_learned_at"]
    assert set(status["metrics"]) == {"roc_auc", "f1", "precision", "recall", "accuracy"}
    assert client.get("/api/v1/tfd/metrics").json()["metrics"] == status["metrics"]
    recent = client.get("/api/v1/tfd/predictions", params={"limit": 5}).json()["items"]
    assert len(recent) == 5 and recent[0]["id"] == events[-1]["transaction_id"]
    assert recent[0]["truth"] == events[-1]["is_fraud"]


@pytest.mark.parametrize("case", ["tfd", "eta"])
def test_learn_without_target_is_422_naming_the_target(client, case):
    sample = client.get(f"/api/v1/{case}/sample").json()
    r = client.post(f"/api/v1/{case}/learn", json=sample)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", TARGETS[case]]


def test_clustering_learns_without_a_target(client):
    sample = client.get("/api/v1/ecci/sample").json()
    r = client.post("/api/v1/ecci/learn", json=sample)
    assert r.status_code == 200 and "cluster" in r.json()["prediction_before_learning"]


@pytest.mark.parametrize(("case", "field", "value"), [
    ("tfd", "amount", "a lot"), ("eta", "origin", {"lat": 1000, "lon": 0}), ("ecci", "event_type", "x"),
])
def test_invalid_event_is_422_naming_the_field(client, case, field, value):
    sample = client.get(f"/api/v1/{case}/sample").json() | {field: value}
    r = client.post(f"/api/v1/{case}/predict", json=sample)
    assert r.status_code == 422
    locs = [err["loc"] for err in r.json()["detail"]]
    assert any(loc[:2] == ["body", field] for loc in locs), locs


def test_health_is_alive_and_readiness_says_what_is_missing(client):
    assert client.get("/health").status_code == 200
    r = client.get("/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False
    assert any("KAFKA_BOOTSTRAP_SERVERS" in m for m in body["missing"])
    assert all(m["loaded"] for m in body["models"].values())


def test_readiness_lists_each_unconnected_consumer():
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1")  # nothing listens there
    with TestClient(create_app(settings)) as c:
        body = c.get("/health/ready").json()
        assert c.get("/health").status_code == 200
    assert body["ready"] is False and body["kafka"]["enabled"] is True
    assert sorted(body["kafka"]["consumers"]) == ["ecci", "eta", "tfd"]
    assert sum("not connected" in m for m in body["missing"]) == 3


def test_prometheus_metrics(client):
    for event in trip_stream(2, 3):
        client.post("/api/v1/eta/learn", json=event)
    client.post("/api/v1/eta/predict", json=client.get("/api/v1/eta/sample").json())
    text = client.get("/metrics").text
    assert 'coelho_model_samples_learned{case="eta"} 3.0' in text
    assert 'coelho_predictions_total{case="eta"} 1.0' in text
    assert 'coelho_learn_requests_total{case="eta"} 3.0' in text
    assert 'coelho_model_metric{case="eta",metric="mae"}' in text
    assert 'coelho_http_requests_total{method="POST",route="/api/v1/eta/learn",status="200"} 3.0' in text


def test_cors_is_closed_by_default_and_explicit_when_configured(client):
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    assert "access-control-allow-origin" not in client.options("/api/v1/tfd/status", headers=headers).headers
    settings = Settings(cors_origins=["https://dash.example"])
    with TestClient(create_app(settings, consume=False)) as c:
        ok = c.get("/health", headers={"Origin": "https://dash.example"})
        bad = c.get("/health", headers={"Origin": "https://evil.example"})
    assert ok.headers["access-control-allow-origin"] == "https://dash.example"
    assert "access-control-allow-origin" not in bad.headers


def test_root_lists_the_cases(client):
    body = client.get("/").json()
    assert set(body["cases"]) == {"tfd", "eta", "ecci"}
    assert body["cases"]["tfd"]["topic"] == "transaction_fraud_detection"


def test_settings_from_env():
    s = Settings.from_env({"PORT": "9000", "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_TOPIC_ETA": "trips",
                           "CORS_ORIGINS": "https://a.example, https://b.example", "REDIS_URL": ""})
    assert s.port == 9000 and s.kafka_bootstrap_servers == "k:9092"
    assert s.topics == {"tfd": "transaction_fraud_detection", "eta": "trips",
                        "ecci": "e_commerce_customer_interactions"}
    assert s.cors_origins == ["https://a.example", "https://b.example"] and s.redis_url is None
    assert Settings.from_env({}).kafka_bootstrap_servers is None and Settings.from_env({}).cors_origins == []
