"""``mlops-year``: play 2013 through the running platform, once per retraining policy, and report.

For each policy (``MLOPS_RETRAIN_POLICY``) in its own home, it starts the Dagster daemon (which
serves the code location from its own code server process), turns the landing zone and
model-health sensors on, and then only plays the *source system*: every ``--step`` days it lands
the next days' schedule and weather feeds and the outcomes of the days before (labels land a day
late, as ``mlops-replay`` does), and waits until the platform is quiet: no run queued or running,
and every sensor has looked again since the last run ended and asked for nothing. Everything
else, ingestion, features, scoring and drift, outcomes, live performance, the policy's
retraining, the gate, promotion and the serving spec, is the daemon's and the sensors' doing.

It resumes: each home keeps ``year-state.json``; run it again and it carries on after the last
finished step (a daemon that dies is restarted, as a Deployment would be). It refuses bad
arguments with exit 2. At the end it writes ``<out>/report.json``, ``<out>/REPORT.md`` and
``<out>/live_auc.png`` (``mlops_assets.year_report``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from mlops_assets.settings import RETRAIN_POLICIES as POLICIES

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SENSORS = ("landing_zone_sensor", "model_health_sensor")
STEP_TIMEOUT_S = 1800
FAILING_TICKS_S = 60


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Platform:
    """The daemon (and through it the code server and run workers) for one home."""

    def __init__(self, home: Path, env: dict):
        self.home, self.env = home, env
        self.proc: subprocess.Popen | None = None
        self.groups: set[int] = set()
        self.restarts = 0

    def start(self) -> None:
        self._stop_leftover()
        log = open(self.home / "daemon.log", "a")
        self.proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
                                     cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.groups.add(self.proc.pid)
        (self.home / "daemon.pid").write_text(str(self.proc.pid))

    def _stop_leftover(self) -> None:
        """A daemon an interrupted ``mlops-year`` left running is stopped (its runs finish on their
        own): two daemons must never serve one instance."""
        import psutil

        pid_file = self.home / "daemon.pid"
        if self.proc is not None or not pid_file.exists():
            return
        pid = int(pid_file.read_text())
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if "dagster-daemon" in " ".join(p.cmdline()):
                _log(f"stopping the daemon an earlier mlops-year left running (pid {pid})")
                p.terminate()
                p.wait(timeout=60)
                self.groups.add(pid)

    def ensure_running(self) -> None:
        """A daemon that died (killed, crashed) is started again; the sensors' cursors and the
        runs' records are in the instance, so it carries on where it was."""
        if self.proc is not None and self.proc.poll() is not None:
            _log(f"daemon exited (rc={self.proc.returncode}); restarting it")
            self.restarts += 1
            self.start()

    def pids(self) -> list[int]:
        import psutil

        out = [os.getpid()]
        for p in psutil.process_iter(["pid"]):  # the daemon, its code server and run workers, orphans
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(p.info["pid"]) in self.groups:
                    out.append(p.info["pid"])
        return out

    def stop(self, inst=None, grace_s: float = 120) -> None:
        """Stop the daemon first (no new runs), let the runs in flight finish, then stop what is
        left (the code server)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
        if inst is not None:
            import dagster as dg

            from mlops_assets.defs.observed import IN_FLIGHT

            deadline = time.time() + grace_s
            while time.time() < deadline and inst.get_run_records(
                    dg.RunsFilter(statuses=[s for s in IN_FLIGHT if s.value != "QUEUED"]), limit=1):
                time.sleep(1)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            time.sleep(1)


def _reap_dead_runs(inst) -> list[str]:
    """Runs recorded as started whose worker process is gone (the machine or the whole process
    tree was killed): the default run launcher cannot tell, so they would stay STARTED for ever.
    They are marked failed, so the sensors ask for their partitions again."""
    import dagster as dg
    import psutil

    from mlops_assets.defs.observed import IN_FLIGHT

    started = [r.dagster_run for r in inst.get_run_records(dg.RunsFilter(statuses=[
        s for s in IN_FLIGHT if s.value in ("STARTING", "STARTED")]))]
    if not started:
        return []
    cmdlines = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdlines.append(" ".join(p.info["cmdline"] or []))
    dead = [r for r in started if not any(r.run_id in c for c in cmdlines)]
    for r in dead:
        inst.report_run_failed(r, "its run worker is gone (mlops-year was interrupted); marked failed on resume")
    return [r.run_id for r in dead]


class CpuMeter:
    """CPU-seconds of a set of processes, sampled: every process seen keeps its last reading, so
    the run workers that come and go inside a step are counted too (to within one sample)."""

    def __init__(self):
        self.seen: dict[tuple[int, float], float] = {}

    def sample(self, pids) -> None:
        import psutil

        for pid in pids:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                t = p.cpu_times()
                self.seen[(pid, p.create_time())] = t.user + t.system

    def total(self) -> float:
        return sum(self.seen.values())


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _sensor_states(inst) -> dict:
    return {s.instigator_name: s for s in inst.all_instigator_state() if s.instigator_type.value == "SENSOR"}


def _sensor_cursors(inst) -> dict:
    return {n: st.instigator_data.cursor if st.instigator_data else None
            for n, st in _sensor_states(inst).items() if n in SENSORS}


def _time_sensors(inst, cursors: dict) -> dict:
    """The sensors' own work for a step, timed in this process without the daemon's scheduling
    and gRPC around it: each evaluated with its cursor from before the step's landing, so it
    looks at the same new files and days the first tick after the landing did (its requests are
    discarded). What grows with history shows here, undisturbed by the runs."""
    import logging

    import dagster as dg

    from mlops_assets.defs.ingestion.sensors import landing_zone_sensor
    from mlops_assets.defs.monitoring.sensors import model_health_sensor
    from mlops_assets.defs.resources import build_resources
    from mlops_assets.settings import get_settings

    logging.getLogger("dagster").setLevel(logging.WARNING)  # their log lines are the daemon's to print
    resources = build_resources(get_settings())
    out = {}
    for name, fn in (("landing_zone_sensor", landing_zone_sensor), ("model_health_sensor", model_health_sensor)):
        t0 = time.perf_counter()
        fn(dg.build_sensor_context(instance=inst, cursor=cursors.get(name), resources=resources))
        out[name] = round((time.perf_counter() - t0) * 1000, 1)
    return out


def _latest_tick(inst, state):
    ticks = inst.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
    return ticks[0] if ticks else None


def _quiet(inst, since: float) -> tuple[bool, str]:
    """No run in flight, and each sensor's latest tick began after the last run ended (and after
    ``since``) and asked for nothing."""
    import dagster as dg

    from mlops_assets.defs.observed import IN_FLIGHT

    if inst.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT), limit=1):
        return False, "runs in flight"
    # the run that ended last (Dagster orders run queries by creation unless told otherwise: the
    # last one *created* can end before an older, longer one, and a tick between the two is not
    # quiet)
    last = inst.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                                                        dg.DagsterRunStatus.CANCELED]), limit=1, order_by="end_time")
    quiet_since = max(since, last[0].end_time or 0.0) if last else since
    states = _sensor_states(inst)
    for name in SENSORS:
        st = states.get(name)
        tick = _latest_tick(inst, st) if st else None
        if tick is not None and tick.status.value == "FAILURE":
            if tick.timestamp - quiet_since > FAILING_TICKS_S:
                raise SystemExit(f"{name} has been failing for over {FAILING_TICKS_S}s: "
                                 f"{tick.error.message.strip() if tick.error else '(no error recorded)'}")
            return False, f"{name} failed its last tick"
        if tick is None or tick.timestamp <= quiet_since or tick.end_timestamp is None:
            return False, f"waiting for a tick of {name}"
        if tick.run_ids:
            return False, f"{name} just requested runs"
    return True, "quiet"


def _steps(first: str, until: str, step: int) -> list[tuple[str, str]]:
    out, d = [], date.fromisoformat(first)
    end = date.fromisoformat(until)
    while d <= end:
        last = min(d + timedelta(days=step - 1), end)
        out.append((d.isoformat(), last.isoformat()))
        d = last + timedelta(days=1)
    return out


def _home_env(home: Path, policy: str, interval: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"MLOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "MLOPS_RETRAIN_POLICY": policy,
                "MLOPS_SENSOR_INTERVAL_S": str(interval), "PYTHONWARNINGS": "ignore"})
    return env


def _start_sensors(home: Path, env: dict) -> None:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as inst:
        states = _sensor_states(inst)
    for name in SENSORS:
        st = states.get(name)
        if st is not None and st.status.value == "RUNNING":
            continue
        out = subprocess.run([str(BIN / "dagster"), "sensor", "start", "-w", str(ROOT / "workspace.yaml"), name],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise SystemExit(f"could not start {name}: {out.stdout[-1500:]}{out.stderr[-1500:]}")


def run_policy(policy: str, home: Path, first: str, until: str, step: int, interval: int) -> dict:
    """Play ``first``..``until`` for one policy in ``home``; returns its state (steps measured)."""
    import dagster as dg

    from mlops_assets.lib.source import replay
    from mlops_assets.settings import ensure_dagster_home, get_settings

    home.mkdir(parents=True, exist_ok=True)
    state_path = home / "year-state.json"
    params = {"policy": policy, "from": first, "until": until, "step": step}
    state = json.loads(state_path.read_text()) if state_path.exists() else {
        **params, "steps": [], "restarts": 0, "command": " ".join(["mlops-year", *sys.argv[1:]]),
        "code_version": get_settings().code_version}
    if {k: state.get(k) for k in params} != params:
        raise SystemExit(f"{home} holds a replay with other settings ({ {k: state.get(k) for k in params} }); "
                         "use --fresh to start over, or another --homes")
    steps = _steps(first, until, step)
    done = len(state["steps"])
    if done >= len(steps):
        _log(f"{policy}: all {len(steps)} steps done already")
        return state
    env = _home_env(home, policy, interval)
    # this process evaluates the sensors too (_time_sensors): the home's settings, not the last one's
    os.environ.update({k: env[k] for k in ("MLOPS_HOME", "DAGSTER_HOME", "MLOPS_RETRAIN_POLICY")})
    get_settings.cache_clear()
    # the instance's storages exist before the daemon and the CLI open it (two processes creating a
    # fresh SQLite instance at once can stamp its schema twice)
    ensure_dagster_home(get_settings())
    platform = Platform(home, env)
    platform.start()
    inst = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        _start_sensors(home, env)
        if done:
            _log(f"{policy}: resuming after step {done}/{len(steps)} (up to {state['steps'][-1]['last']})")
        reaped = _reap_dead_runs(inst)
        if reaped:
            _log(f"{policy}: {len(reaped)} run(s) had lost their worker; marked failed: {reaped}")
        if done:
            _wait_quiet(inst, platform, time.time(), CpuMeter())
        for i in range(done, len(steps)):
            a, b = steps[i]
            cpu = CpuMeter()
            cpu.sample(platform.pids())
            before = cpu.total()
            t0 = time.time()
            cursors = _sensor_cursors(inst)
            # runs of an interrupted attempt at this step (before a resume) count in this step
            runs_before = {r for st in state["steps"] for r in st["runs"]}
            # The source system: the days' schedules and weather, and the outcomes of the day
            # before each (outcomes of `b` land with the next step).
            replay(env_landing(home), b, a, outcomes_from=first)
            # quiet only after a tick that saw every file landed (one during the landing can see few)
            _wait_quiet(inst, platform, time.time(), cpu)
            wall = time.time() - t0
            sensor_ms = _time_sensors(inst, cursors)
            new_runs = sorted({r.dagster_run.run_id for r in inst.get_run_records()} - runs_before)
            entry = {"first": a, "last": b, "days": (date.fromisoformat(b) - date.fromisoformat(a)).days + 1,
                     "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu.total() - before, 2),
                     "runs": new_runs, "instance_bytes": _dir_bytes(home / "dagster"), "sensor_ms": sensor_ms,
                     "finished_at": time.time()}
            state["steps"].append(entry)
            state["restarts"] = state.get("restarts", 0) + platform.restarts
            platform.restarts = 0
            tmp = state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, state_path)
            _log(f"{policy} step {i + 1}/{len(steps)} {a}..{b}: {wall:.1f}s wall, "
                 f"{entry['cpu_seconds']:.1f} CPU-s, {len(new_runs)} run(s)")
    finally:
        platform.stop(inst)
        inst.dispose()
    return state


def env_landing(home: Path) -> str:
    return os.environ.get("MLOPS_LANDING_URI") or str(home / "landing")


def _wait_quiet(inst, platform: Platform, since: float, cpu: CpuMeter) -> None:
    deadline = time.time() + STEP_TIMEOUT_S
    why = ""
    while time.time() < deadline:
        platform.ensure_running()
        cpu.sample(platform.pids())
        ok, why = _quiet(inst, since)
        if ok:
            return
        time.sleep(0.5)
    raise SystemExit(f"the platform did not settle within {STEP_TIMEOUT_S}s ({why}); see {platform.home}/daemon.log")


def _parse(argv):
    from mlops_assets.settings import get_settings

    s = get_settings()
    last_day = (date.fromisoformat(s.end) - timedelta(days=1)).isoformat()
    ap = argparse.ArgumentParser(prog="mlops-year", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help=f"comma-separated, from {', '.join(POLICIES)} (default: all three)")
    ap.add_argument("--step", type=int, default=7, help="days landed at once (1 = day by day; default 7)")
    ap.add_argument("--from", dest="first", default=s.start, help=f"first day landed (default {s.start})")
    ap.add_argument("--until", default=last_day, help=f"last day landed (default {last_day})")
    ap.add_argument("--out", default="year", help="where the report goes (default ./year)")
    ap.add_argument("--homes", default=str(s.home / "year"),
                    help="one home per policy under this folder (default $MLOPS_HOME/year)")
    ap.add_argument("--fresh", action="store_true", help="discard the policies' homes and start over")
    ap.add_argument("--report-only", action="store_true", help="write the report from the homes as they are")
    ap.add_argument("--interval", type=int, default=1, help="sensor interval, seconds (default 1)")
    args = ap.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        ap.error(f"--policies: unknown policy {', '.join(unknown) or '(none given)'}; expected some of {', '.join(POLICIES)}")
    if len(set(policies)) != len(policies):
        ap.error("--policies: a policy is named twice")
    if args.step < 1:
        ap.error(f"--step {args.step}: must be at least 1 (days landed at once)")
    for name in ("first", "until"):
        value = getattr(args, name)
        try:
            date.fromisoformat(value)
        except ValueError:
            ap.error(f"--{'from' if name == 'first' else name} {value!r} is not a YYYY-MM-DD date")
        if not s.start <= value <= last_day:
            ap.error(f"--{'from' if name == 'first' else name} {value} is outside the span {s.start}..{last_day} "
                     "(MLOPS_START / MLOPS_END)")
    if args.first > args.until:
        ap.error(f"--from {args.first} is after --until {args.until}")
    if args.interval < 1:
        ap.error("--interval must be at least 1 second")
    args.policies = policies
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from mlops_assets.year_report import write_report

    homes = Path(args.homes).resolve()
    if args.fresh:
        import shutil

        for p in args.policies:
            shutil.rmtree(homes / p, ignore_errors=True)
    states = {}
    for policy in args.policies:
        home = homes / policy
        if args.report_only:
            states[policy] = json.loads((home / "year-state.json").read_text())
            continue
        _log(f"{policy}: {args.first}..{args.until} in steps of {args.step} day(s), home {home}")
        states[policy] = run_policy(policy, home, args.first, args.until, args.step, args.interval)
    out = Path(args.out)
    report = write_report({p: homes / p for p in args.policies}, states, out,
                          command=" ".join(["mlops-year", *(argv if argv is not None else sys.argv[1:])]))
    for p, r in report["policies"].items():
        _log(f"{p}: mean weekly live AUC {r['mean_weekly_live_auc']:.4f}, {r['training_runs']} training run(s), "
             f"{r['promotions']} promotion(s), {r['failed_runs']} failed, {r['duplicate_runs']} duplicate, "
             f"{r['redundant_runs']} redundant, {r['wall_seconds']:.0f}s")
    _log(f"report: {out / 'REPORT.md'}, {out / 'report.json'}, {out / 'live_auc.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
