import math

from river import metrics

from app.learners import ArrivalTime, CustomerInteractions, FraudDetection
from app.schemas import InteractionEvent, TransactionEvent, TripEvent

from .streams import fraud_stream, interaction_stream, trip_stream


def _auc(case, events):
    auc = metrics.ROCAUC()
    for e in events:
        p = case.predict(e)["fraud_probability"]
        auc.update(bool(e.is_fraud), {True: p, False: 1 - p})
    return auc.get()


def test_fraud_model_improves_on_a_stream():
    case = FraudDetection()
    holdout = [TransactionEvent.model_validate(e) for e in fraud_stream(99, 1500)]
    before = _auc(case, holdout)
    for e in fraud_stream(1, 3000):
        case.learn(TransactionEvent.model_validate(e))
    after = _auc(case, holdout)
    assert before <= 0.55 and after >= 0.85, (before, after)
    assert case.samples_learned == 3000
    assert case.metric_values()["roc_auc"] > 0.8  # progressive validation agrees


def test_eta_model_beats_the_routing_estimate():
    case = ArrivalTime()
    holdout = [TripEvent.model_validate(e) for e in trip_stream(99, 800)]

    def mae(predict):
        return sum(abs(predict(e) - e.simulated_actual_travel_time_seconds) for e in holdout) / len(holdout)

    untrained = mae(lambda e: case.predict(e)["travel_time_seconds"])
    baseline = mae(lambda e: e.initial_estimated_travel_time_seconds)
    assert math.isclose(untrained, baseline)  # before learning it falls back to the initial estimate
    for e in trip_stream(1, 4000):
        case.learn(TripEvent.model_validate(e))
    trained = mae(lambda e: case.predict(e)["travel_time_seconds"])
    assert trained < 0.7 * baseline, (trained, baseline)
    assert case.metric_values()["r2"] > 0.8


def test_progressive_metrics_get_better_as_the_stream_goes_on():
    case = ArrivalTime()
    stream = [TripEvent.model_validate(e) for e in trip_stream(3, 3000)]
    errors = []
    for e in stream:
        errors.append(abs(case.learn(e)["travel_time_seconds"] - e.simulated_actual_travel_time_seconds))
    first, last = sum(errors[:100]) / 100, sum(errors[-500:]) / 500
    assert last < 0.75 * first, (first, last)


def test_clustering_uses_several_clusters_and_reports_silhouette():
    case = CustomerInteractions()
    for e in interaction_stream(1, 1500):
        case.learn(InteractionEvent.model_validate(e))
    status = case.status()
    assert len(status["cluster_counts"]) >= 3
    assert sum(status["cluster_counts"].values()) == 1500
    assert status["metrics"]["silhouette"] is not None and status["metrics"]["silhouette"] > 0


def test_snapshot_round_trip_keeps_the_model():
    case = FraudDetection()
    for e in fraud_stream(5, 500):
        case.learn(TransactionEvent.model_validate(e))
    probe = TransactionEvent.model_validate(next(fraud_stream(6, 1)))
    copy = FraudDetection()
    copy.loads(case.dumps(), "snapshot")
    assert copy.predict(probe) == case.predict(probe)
    assert copy.samples_learned == 500 and copy.status()["restored_from"] == "snapshot"
    assert copy.metric_values() == case.metric_values()


def test_metrics_are_none_before_any_label():
    assert set(FraudDetection().metric_values().values()) == {None}
