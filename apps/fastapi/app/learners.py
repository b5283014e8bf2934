"""Online learners (River) for the three cases, with progressive validation.

Each ``learn`` first predicts the event, updates the case's metrics with (truth, prediction) and
then learns it: the metrics are always measured on events the model had not seen yet.
"""

from __future__ import annotations

import math
import pickle
from collections import Counter, deque
from datetime import datetime, timezone
from typing import Any, ClassVar

from pydantic import BaseModel
from river import cluster, linear_model, metrics, optim, preprocessing

from .schemas import InteractionEvent, TransactionEvent, TripEvent


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _onehot(prefix: str, value: str | None) -> dict[str, float]:
    return {f"{prefix}={value or 'none'}": 1.0}


def _metric_value(metric: Any) -> float | None:
    value = metric.get()
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return None
    return round(float(value), 6)


class OnlineCase:
    """One case: a River model, its progressive metrics and a window of recent predictions."""

    key: ClassVar[str]
    title: ClassVar[str]
    task: ClassVar[str]
    schema: ClassVar[type[BaseModel]]
    target_field: ClassVar[str | None] = None

    def __init__(self, recent: int = 50) -> None:
        self._recent_size = recent
        self.restored_from: str | None = None
        self.reset()

    # --- to be provided by each case -------------------------------------------------------------
    def build_model(self) -> Any:
        raise NotImplementedError

    def build_metrics(self) -> dict[str, Any]:
        raise NotImplementedError

    def features(self, event: BaseModel) -> dict[str, float]:
        raise NotImplementedError

    def _predict(self, x: dict[str, float]) -> dict[str, Any]:
        raise NotImplementedError

    def _learn(self, x: dict[str, float], y: Any, prediction: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- common ----------------------------------------------------------------------------------
    def reset(self) -> None:
        self.model = self.build_model()
        self.metrics = self.build_metrics()
        self.samples_learned = 0
        self.predictions_served = 0
        self.last_learned_at: str | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=self._recent_size)

    @property
    def model_name(self) -> str:
        return str(self.model.__class__.__name__) if not hasattr(self.model, "steps") else " | ".join(
            type(step).__name__ for step in self.model.steps.values()
        )

    def target(self, event: BaseModel) -> Any:
        return getattr(event, self.target_field) if self.target_field else None

    def event_id(self, event: BaseModel) -> str:
        return str(next(iter(event.model_dump().values())))

    def predict(self, event: BaseModel) -> dict[str, Any]:
        prediction = self._predict(self.features(event))
        self.predictions_served += 1
        return prediction

    def learn(self, event: BaseModel) -> dict[str, Any]:
        """Predict-then-learn one labelled event; returns the prediction made before learning."""
        y = self.target(event)
        if self.target_field and y is None:
            raise ValueError(f"{self.target_field} is required to learn")
        x = self.features(event)
        prediction = self._predict(x)
        self._learn(x, y, prediction)
        self.samples_learned += 1
        self.last_learned_at = _now()
        self.recent.appendleft(
            {"id": self.event_id(event), "at": self.last_learned_at, "prediction": prediction,
             "truth": y if self.target_field else None}
        )
        return prediction

    def metric_values(self) -> dict[str, float | None]:
        if not self.samples_learned:
            return {name: None for name in self.metrics}
        return {name: _metric_value(metric) for name, metric in self.metrics.items()}

    def status(self) -> dict[str, Any]:
        return {
            "case": self.key,
            "title": self.title,
            "task": self.task,
            "model": self.model_name,
            "loaded": True,
            "restored_from": self.restored_from,
            "samples_learned": self.samples_learned,
            "predictions_served": self.predictions_served,
            "last_learned_at": self.last_learned_at,
            "metrics": self.metric_values(),
        }

    # --- persistence (optional Redis snapshots) --------------------------------------------------
    def dumps(self) -> bytes:
        state = {k: getattr(self, k) for k in ("model", "metrics", "samples_learned", "last_learned_at")}
        state.update(self._extra_state())
        return pickle.dumps(state)

    def loads(self, blob: bytes, source: str) -> None:
        state = pickle.loads(blob)  # noqa: S301 - our own snapshot, written by this service
        for name, value in state.items():
            setattr(self, name, value)
        self.restored_from = source

    def _extra_state(self) -> dict[str, Any]:
        return {}


class FraudDetection(OnlineCase):
    key = "tfd"
    title = "Transaction Fraud Detection"
    task = "binary classification"
    schema = TransactionEvent
    target_field = "is_fraud"

    def build_model(self) -> Any:
        # Fraud is rare (about 1 %): weight the positive class so the model does not settle on "never".
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(0.05), loss=optim.losses.Log(weight_pos=10.0)
        )

    def build_metrics(self) -> dict[str, Any]:
        return {"roc_auc": metrics.ROCAUC(), "f1": metrics.F1(), "precision": metrics.Precision(),
                "recall": metrics.Recall(), "accuracy": metrics.Accuracy()}

    def features(self, event: TransactionEvent) -> dict[str, float]:  # type: ignore[override]
        hour = event.timestamp.astimezone(timezone.utc).hour
        x = {
            "log_amount": math.log1p(event.amount),
            "log_account_age": math.log1p(event.account_age_days),
            "new_account": float(event.account_age_days < 30),
            "cvv_missing": float(not event.cvv_provided),
            "billing_mismatch": float(not event.billing_address_match),
            "night": float(hour < 6),
            "foreign_currency": float(event.currency != "USD"),
        }
        x |= _onehot("payment", event.payment_method)
        x |= _onehot("type", event.transaction_type)
        x |= _onehot("category", event.product_category)
        x |= _onehot("os", event.device_info.os)
        return x

    def _predict(self, x: dict[str, float]) -> dict[str, Any]:
        p = float(self.model.predict_proba_one(x).get(True, 0.0))
        return {"is_fraud": int(p > 0.5), "fraud_probability": round(p, 6)}

    def _learn(self, x: dict[str, float], y: Any, prediction: dict[str, Any]) -> None:
        truth = bool(y)
        self.metrics["roc_auc"].update(truth, {True: prediction["fraud_probability"],
                                               False: 1 - prediction["fraud_probability"]})
        for name in ("f1", "precision", "recall", "accuracy"):
            self.metrics[name].update(truth, bool(prediction["is_fraud"]))
        self.model.learn_one(x, truth)


RUSH_HOURS = {7, 8, 9, 16, 17, 18}
BAD_WEATHER = {"Rain", "Heavy Rain", "Thunderstorm", "Fog", "Snow"}


class ArrivalTime(OnlineCase):
    key = "eta"
    title = "Estimated Time of Arrival"
    task = "regression"
    schema = TripEvent
    target_field = "simulated_actual_travel_time_seconds"

    def build_model(self) -> Any:
        return preprocessing.TargetStandardScaler(
            regressor=preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.01))
        )

    @property
    def model_name(self) -> str:
        return "TargetStandardScaler(StandardScaler | LinearRegression)"

    def build_metrics(self) -> dict[str, Any]:
        return {"mae": metrics.MAE(), "rmse": metrics.RMSE(), "r2": metrics.R2()}

    def features(self, event: TripEvent) -> dict[str, float]:  # type: ignore[override]
        rush = float(event.hour_of_day in RUSH_HOURS and event.day_of_week < 5)
        bad = float(event.weather in BAD_WEATHER)
        base = event.initial_estimated_travel_time_seconds
        x = {
            "distance_km": event.estimated_distance_km,
            "initial_estimate": base,
            "rush_hour": rush,
            "bad_weather": bad,
            "initial_x_rush": base * rush,
            "initial_x_bad_weather": base * bad,
            "driver_rating": event.driver_rating,
            "initial_x_rating": base * (5.0 - event.driver_rating),
            "weekend": float(event.day_of_week >= 5),
            "night": float(event.hour_of_day < 6 or event.hour_of_day >= 22),
            "temperature": event.temperature_celsius,
        }
        x |= _onehot("weather", event.weather)
        x |= _onehot("vehicle", event.vehicle_type)
        return x

    def _predict(self, x: dict[str, float]) -> dict[str, Any]:
        # Before the first label the routing engine's own estimate is the best guess there is.
        y = float(self.model.predict_one(x)) if self.samples_learned else x["initial_estimate"]
        if not math.isfinite(y):
            y = x["initial_estimate"]
        return {"travel_time_seconds": round(max(y, 0.0), 2)}

    def _learn(self, x: dict[str, float], y: Any, prediction: dict[str, Any]) -> None:
        for metric in self.metrics.values():
            metric.update(float(y), prediction["travel_time_seconds"])
        self.model.learn_one(x, float(y))


class CustomerInteractions(OnlineCase):
    key = "ecci"
    title = "E-Commerce Customer Interactions"
    task = "clustering"
    schema = InteractionEvent
    n_clusters = 5

    def reset(self) -> None:
        super().reset()
        self.cluster_counts: Counter[int] = Counter()

    def _extra_state(self) -> dict[str, Any]:
        return {"cluster_counts": self.cluster_counts}

    def build_model(self) -> Any:
        return preprocessing.StandardScaler() | cluster.KMeans(
            n_clusters=self.n_clusters, halflife=0.3, sigma=1.0, seed=42
        )

    def build_metrics(self) -> dict[str, Any]:
        return {"silhouette": metrics.Silhouette()}

    def features(self, event: InteractionEvent) -> dict[str, float]:  # type: ignore[override]
        x = {
            "log_price": math.log1p(event.price or 0.0),
            "quantity": float(event.quantity or 0),
            "log_time_on_page": math.log1p(event.time_on_page_seconds),
            "session_step": float(event.session_event_sequence),
            "has_search": float(bool(event.search_query)),
        }
        for kind in ("page_view", "add_to_cart", "purchase", "search", "leave_review"):
            x[f"event={kind}"] = float(event.event_type == kind)
        x |= _onehot("device", event.device_info.device_type)
        return x

    def _predict(self, x: dict[str, float]) -> dict[str, Any]:
        scaled = self.model["StandardScaler"].transform_one(x)
        return {"cluster": int(self.model["KMeans"].predict_one(scaled))}

    def _learn(self, x: dict[str, float], y: Any, prediction: dict[str, Any]) -> None:
        scaler, kmeans = self.model["StandardScaler"], self.model["KMeans"]
        scaler.learn_one(x)
        scaled = scaler.transform_one(x)
        kmeans.learn_one(scaled)
        assigned = int(kmeans.predict_one(scaled))
        self.cluster_counts[assigned] += 1
        if self.samples_learned >= self.n_clusters:
            self.metrics["silhouette"].update(scaled, assigned, kmeans.centers)
        prediction["cluster"] = assigned

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["cluster_counts"] = {str(k): v for k, v in sorted(self.cluster_counts.items())}
        return status


CASES: tuple[type[OnlineCase], ...] = (FraudDetection, ArrivalTime, CustomerInteractions)


def build_cases() -> dict[str, OnlineCase]:
    return {cls.key: cls() for cls in CASES}
