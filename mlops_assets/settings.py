"""The one place that reads the environment.

Everything else asks :func:`get_settings` (cached per process).  No Dagster, MLflow, torch or
scikit-learn import here: the code location imports this module at load time.

Variables (all optional):

==========================  =====================================================================
``MLOPS_HOME``              all local state (default ``./.mlops``): landing/, lake/, mlflow/, dagster/
``MLOPS_PROFILE``           ``local`` (default) or ``k8s``
``MLOPS_LANDING_URI``       the landing zone (default ``$MLOPS_HOME/landing``); a path or URI
``MLOPS_LAKE_URI``          the lake (default ``$MLOPS_HOME/lake``); a path or URI
``MLFLOW_TRACKING_URI``     a tracking server; default: SQLite under ``$MLOPS_HOME/mlflow``
``MLOPS_START``/``MLOPS_END``  the partitioned span, end exclusive (default 2013-01-01 / 2014-01-01)
``MLOPS_TRAIN_WEEKS``       weeks of daily examples in a weekly training set (default 8)
``MLOPS_TRIALS``            trials per model family in a sweep (default 3)
``MLOPS_GATE_MIN_AUC``      the gate's absolute floor on holdout ROC AUC (default 0.60)
``MLOPS_GATE_MIN_DELTA``    how much the challenger must beat the champion by (default 0.0)
``MLOPS_GPU_COUNT``         GPUs each torch trial asks for on Kubernetes (default 1)
``MLOPS_MAX_CONCURRENT``    parallel steps for the local multiprocess executor (default: CPU count)
``MLOPS_EXECUTOR``          local profile: ``auto`` (default: ``multiprocess`` with 4 or more CPUs, else
                            ``in_process``), ``multiprocess`` (a process per step) or ``in_process``
``MLOPS_CODE_VERSION``      the code version recorded on models (default: ``git rev-parse HEAD``)
``MLOPS_SENSOR_INTERVAL_S`` how often the sensors look (default 30)
``MLOPS_RETRAIN_POLICY``    ``health`` (default: cold start, then retrain when the model-health
                            verdict says the champion decayed), ``weekly`` (cold start, then every
                            complete week) or ``frozen`` (cold start only)
``MLOPS_HEALTH_*``          the model-health verdict (DAYS 7, CALIBRATION_GAP 0.08,
                            AUC_TOLERANCE 0.08, LOG_LOSS_TOLERANCE 0.5, PSI 0.25, DRIFT_SHARE 0.5)
``MLOPS_ALERT_WEBHOOK_URL`` where failed-run alerts are POSTed (unset: logged only)
``MLOPS_UI_URL``            the UI's address, for links in alerts (default http://127.0.0.1:3000)
``MLOPS_SERVING_MAX_ROWS``  rows allowed per online scoring request (default 10000; more: HTTP 400)
``MLOPS_SERVING_MAX_BYTES`` bytes allowed per request body (default 8000000; more: HTTP 413)
``MLOPS_PAYLOAD_SAMPLE``    share of online requests recorded with their answers (default 1.0)
``MLOPS_PAYLOAD_LOG_URI``   where they are recorded (default ``$MLOPS_LANDING_URI/online``)
``MLOPS_PAYLOAD_FLUSH_S``   how often the recorder writes a batch (default 10 s)
``MLOPS_ONLINE_START``      the first day of ``online_predictions``' partitions (default 2026-01-01)
``MLOPS_PROMOTION_LOCK_URL`` the PostgreSQL database of the champion lock (default ``DAGSTER_PG_URL``)
k8s profile: ``MLOPS_K8S_NAMESPACE`` (mlops), ``MLOPS_IMAGE``, ``MLOPS_GPU_IMAGE``,
``MLOPS_GPU_NODE_SELECTOR`` (k=v,...), ``MLOPS_K8S_SERVICE_ACCOUNT`` (mlops-assets),
``MLOPS_K8S_ENV_SECRETS`` (mlops-credentials), ``MLOPS_IO_URI`` (default ``$MLOPS_LAKE_URI/_dagster_io``)
==========================  =====================================================================
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
from datetime import date
from pathlib import Path

PROFILES = ("local", "k8s")
RETRAIN_POLICIES = ("health", "weekly", "frozen")
MODEL_NAME = "flight_delay"
# PSI above this is the textbook "major" shift: the alarm where no calibrated threshold exists.
PSI_MAJOR = 0.25
EXPERIMENT_NAME = "flight_delay"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:  # a clear error beats a silent default
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from exc


def _date(name: str, default: str) -> str:
    raw = os.environ.get(name) or default
    try:
        date.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not a YYYY-MM-DD date") from exc
    return raw


def is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


@dataclasses.dataclass(frozen=True)
class Settings:
    home: Path
    profile: str
    landing_uri: str
    lake_uri: str
    tracking_uri: str
    remote_tracking: bool
    start: str
    end: str
    train_weeks: int
    trials: int
    gate_min_auc: float
    gate_min_delta: float
    gpu_count: int
    max_concurrent: int
    code_version: str
    k8s_namespace: str
    k8s_image: str
    gpu_image: str = ""
    gpu_node_selector: str = ""
    k8s_service_account: str = "mlops-assets"
    k8s_env_secrets: tuple[str, ...] = ("mlops-credentials",)
    io_uri: str = ""
    sensor_interval_s: int = 30
    retrain_policy: str = "health"
    gate_log_loss_tolerance: float = 0.01
    recalibration_alpha: float = 0.01
    infra_validation: bool = True
    infra_p99_ms: float = 250.0
    shadow: bool = True
    shadow_promote_days: int = 0
    health_days: int = 7
    health_calibration_gap: float = 0.08
    health_auc_tolerance: float = 0.08
    health_log_loss_tolerance: float = 0.5
    health_psi: float = PSI_MAJOR
    health_drift_share: float = 0.5
    alert_webhook_url: str = ""
    ui_url: str = "http://127.0.0.1:3000"
    serving_max_rows: int = 10_000
    serving_max_bytes: int = 8_000_000
    payload_sample: float = 1.0
    payload_log_uri: str = ""
    payload_flush_s: float = 10.0
    online_start: str = "2026-01-01"
    promotion_lock_url: str = ""
    dagster_home_override: str = ""
    mlflow_artifact_root_override: str = ""
    executor: str = "multiprocess"

    @property
    def dagster_home(self) -> Path:
        return Path(self.dagster_home_override or self.home / "dagster")

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_artifact_root(self) -> str:
        return self.mlflow_artifact_root_override or (self.mlflow_dir / "artifacts").as_uri()

    @property
    def deploy_dir(self) -> Path:
        return self.home / "deploy"


def _code_version() -> str:
    if os.environ.get("MLOPS_CODE_VERSION"):
        return os.environ["MLOPS_CODE_VERSION"]
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5, check=False,
            ).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "0.1.0"


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(name) or default
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {allowed}")
    return value


def _executor(choice: str) -> str:
    # A step process costs 0.5-1.5 s (fork, instance, imports its step needs) and parallel steps
    # only pay where there are cores to run them: on 2 CPUs the weekly training cycle took 17.8 s
    # with a process per step and 10.6 s with all steps in the run's process (bench B2).
    if choice == "auto":
        return "multiprocess" if (os.cpu_count() or 1) >= 4 else "in_process"
    return choice


_D = Settings  # the defaults, written once: the dataclass fields above


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    home = Path(os.environ.get("MLOPS_HOME") or ".mlops").resolve()
    profile = os.environ.get("MLOPS_PROFILE", "local")
    if profile not in PROFILES:
        raise ValueError(f"MLOPS_PROFILE={profile!r}: expected one of {PROFILES}")
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    remote = bool(tracking)
    if not tracking:
        # ?timeout: SQLite busy timeout (seconds) so that parallel steps wait instead of failing.
        tracking = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}?timeout=60"
    start = _date("MLOPS_START", "2013-01-01")
    end = _date("MLOPS_END", "2014-01-01")
    if start >= end:
        raise ValueError(f"MLOPS_START={start} must be before MLOPS_END={end}")
    landing = os.environ.get("MLOPS_LANDING_URI") or str(home / "landing")
    return Settings(
        home=home,
        profile=profile,
        landing_uri=landing,
        lake_uri=os.environ.get("MLOPS_LAKE_URI") or str(home / "lake"),
        tracking_uri=tracking,
        remote_tracking=remote,
        start=start,
        end=end,
        train_weeks=max(2, _int("MLOPS_TRAIN_WEEKS", 8)),
        trials=max(1, _int("MLOPS_TRIALS", 3)),
        gate_min_auc=_float("MLOPS_GATE_MIN_AUC", 0.60),
        gate_min_delta=_float("MLOPS_GATE_MIN_DELTA", 0.0),
        gpu_count=_int("MLOPS_GPU_COUNT", 1),
        max_concurrent=max(1, _int("MLOPS_MAX_CONCURRENT", os.cpu_count() or 2)),
        code_version=_code_version(),
        executor=_executor(_choice("MLOPS_EXECUTOR", "auto", ("auto", "multiprocess", "in_process"))),
        k8s_namespace=os.environ.get("MLOPS_K8S_NAMESPACE", "mlops"),
        k8s_image=os.environ.get("MLOPS_IMAGE", "mlops-assets:latest"),
        gpu_image=os.environ.get("MLOPS_GPU_IMAGE", ""),
        gpu_node_selector=os.environ.get("MLOPS_GPU_NODE_SELECTOR", ""),
        k8s_service_account=os.environ.get("MLOPS_K8S_SERVICE_ACCOUNT", "mlops-assets"),
        k8s_env_secrets=tuple(x for x in os.environ.get("MLOPS_K8S_ENV_SECRETS", "mlops-credentials").split(",") if x),
        io_uri=os.environ.get("MLOPS_IO_URI", ""),
        sensor_interval_s=max(1, _int("MLOPS_SENSOR_INTERVAL_S", _D.sensor_interval_s)),
        retrain_policy=_choice("MLOPS_RETRAIN_POLICY", _D.retrain_policy, RETRAIN_POLICIES),
        gate_log_loss_tolerance=_float("MLOPS_GATE_LOG_LOSS_TOL", _D.gate_log_loss_tolerance),
        recalibration_alpha=_float("MLOPS_RECALIBRATION_ALPHA", _D.recalibration_alpha),
        infra_validation=_choice("MLOPS_INFRA_VALIDATION", "on", ("on", "off")) == "on",
        infra_p99_ms=_float("MLOPS_INFRA_P99_MS", _D.infra_p99_ms),
        shadow=_choice("MLOPS_SHADOW", "on", ("on", "off")) == "on",
        shadow_promote_days=max(0, _int("MLOPS_SHADOW_PROMOTE_DAYS", _D.shadow_promote_days)),
        health_days=max(3, _int("MLOPS_HEALTH_DAYS", _D.health_days)),
        health_calibration_gap=_float("MLOPS_HEALTH_CALIBRATION_GAP", _D.health_calibration_gap),
        health_auc_tolerance=_float("MLOPS_HEALTH_AUC_TOLERANCE", _D.health_auc_tolerance),
        health_log_loss_tolerance=_float("MLOPS_HEALTH_LOG_LOSS_TOLERANCE", _D.health_log_loss_tolerance),
        health_psi=_float("MLOPS_HEALTH_PSI", _D.health_psi),
        health_drift_share=_float("MLOPS_HEALTH_DRIFT_SHARE", _D.health_drift_share),
        alert_webhook_url=os.environ.get("MLOPS_ALERT_WEBHOOK_URL", ""),
        ui_url=os.environ.get("MLOPS_UI_URL", "http://127.0.0.1:3000"),
        serving_max_rows=max(1, _int("MLOPS_SERVING_MAX_ROWS", _D.serving_max_rows)),
        serving_max_bytes=max(1024, _int("MLOPS_SERVING_MAX_BYTES", _D.serving_max_bytes)),
        payload_sample=min(1.0, max(0.0, _float("MLOPS_PAYLOAD_SAMPLE", _D.payload_sample))),
        # online requests and answers land beside the other feeds: the landing zone's online/
        payload_log_uri=os.environ.get("MLOPS_PAYLOAD_LOG_URI") or f"{landing.rstrip('/')}/online",
        payload_flush_s=max(0.1, _float("MLOPS_PAYLOAD_FLUSH_S", _D.payload_flush_s)),
        online_start=_date("MLOPS_ONLINE_START", _D.online_start),
        # the champion lock's database: its own setting, else the Dagster instance's PostgreSQL
        promotion_lock_url=os.environ.get("MLOPS_PROMOTION_LOCK_URL") or os.environ.get("DAGSTER_PG_URL", ""),
        dagster_home_override=os.environ.get("DAGSTER_HOME", ""),
        mlflow_artifact_root_override=os.environ.get("MLOPS_MLFLOW_ARTIFACT_ROOT", ""),
    )


DAGSTER_YAML = """\
# Written by mlops_assets (settings.ensure_dagster_home) when missing; edit freely.
# The embedded default: SQLite storage under this folder.
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 2   # 2 cores: runs beyond this wait in the queue
  pools:
    granularity: op
run_queue:
  dequeue_interval_seconds: 1   # a queued run starts within a second (default 5)
sensors:
  use_threads: true             # sensors are evaluated side by side, not one after another
  num_workers: 4
run_monitoring:
  enabled: true
# Log records of the project's own loggers (plain `logging` in mlops_assets.lib) become events of
# the step that ran them: in the UI, the event log and the step's captured logs.
python_logs:
  python_log_level: INFO
  managed_python_loggers:
    - mlops_assets
"""


def ensure_dagster_home(settings: Settings | None = None, *, init_storage: bool = True) -> Path:
    """Create ``$DAGSTER_HOME`` with a ``dagster.yaml`` if missing, and (``init_storage``) its
    SQLite storages, once, under a lock; returns the folder.

    Processes that start on a fresh home at the same moment (four ``dagster job execute`` at
    once) otherwise race on creating the storages and can stamp a schema twice ("more than one
    head"), found by tests/reliability/test_concurrency.py."""
    import fcntl

    settings = settings or get_settings()
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        tmp = cfg.with_suffix(f".yaml.{os.getpid()}.tmp")
        tmp.write_text(DAGSTER_YAML)
        os.replace(tmp, cfg)
    ready = home / ".storage-ready"
    if init_storage and not ready.exists():
        with open(home / ".storage.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            if not ready.exists():
                import dagster as dg

                with dg.DagsterInstance.from_config(str(home)) as instance:
                    instance.get_runs(limit=1)  # creates the run, event-log and schedule storages
                ready.write_text("")
    return home
