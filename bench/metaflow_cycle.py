"""B8's peer: the weekly training cycle as a Metaflow flow on its local runtime, what a data
scientist would write instead of our training_job. It calls the same lib/ functions with the same
trials, MLflow logging and registration as the job's steps: training set -> a `foreach` over the
trials (each a task, as each trial is a step of ours) -> per family the best trial, the challenger
scored against the champion on the holdout, the gate, registration and promotion.

    python bench/metaflow_cycle.py run --week 2013-02-04 --max-workers 2
"""

import sys
from pathlib import Path

from metaflow import FlowSpec, Parameter, step

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class WeeklyTrainingFlow(FlowSpec):
    week = Parameter("week", help="the weekly partition (a Monday)", required=True)

    @step
    def start(self):
        from mlops_assets.defs.partitions import training_window_days
        from mlops_assets.lib import tracking
        from mlops_assets.lib.models import FAMILIES, sweep
        from mlops_assets.lib.storage import Lake
        from mlops_assets.lib.training import make_training_set
        from mlops_assets.settings import get_settings

        s = get_settings()
        lake = Lake(s.lake_uri)
        days = [d for d in training_window_days(self.week, s.train_weeks) if lake.has("training_examples", d)]
        lake.write("training_set", self.week, make_training_set(lake.read_many("training_examples", days)))
        exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
        self.parent = tracking.parent_run_id(exp, f"metaflow-{self.week}-{id(self)}")
        self.trials = [(fam, i, params) for fam in FAMILIES for i, params in enumerate(sweep(fam, s.trials))]
        self.next(self.train, foreach="trials")

    @step
    def train(self):
        from mlops_assets.lib import tracking
        from mlops_assets.lib.storage import Lake
        from mlops_assets.lib.training import train_trial
        from mlops_assets.settings import get_settings

        s = get_settings()
        fam, i, params = self.input
        ts = Lake(s.lake_uri).read("training_set", self.week)
        exp = tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
        run_id = tracking.start_trial_run(exp, self.parent, f"{fam}-t{i}", {"family": fam})
        r = train_trial(fam, params, ts, seed=i)
        tracking.log_batch(run_id, params=params, metrics={f"valid_{k}": v for k, v in r.valid_metrics.items()})
        tracking.end_run(run_id)
        self.family, self.valid_auc, self.run_id, self.model = fam, r.valid_metrics["roc_auc"], run_id, r.model
        self.next(self.join)

    @step
    def join(self, inputs):
        from mlops_assets.lib import registry, tracking
        from mlops_assets.lib.drift import build_reference
        from mlops_assets.lib.features import CATEGORICAL_FEATURES, DRIFT_NUMERIC_FEATURES, feature_matrix
        from mlops_assets.lib.metrics import GateDecision, classification_metrics
        from mlops_assets.lib.storage import Lake
        from mlops_assets.lib.training import score_split
        from mlops_assets.settings import get_settings

        s = get_settings()
        best = {}
        for inp in inputs:
            if inp.family not in best or inp.valid_auc > best[inp.family].valid_auc:
                best[inp.family] = inp
        ts = Lake(s.lake_uri).read("training_set", self.week)
        holdout = ts[ts["split"] == "holdout"]
        scored = {fam: score_split(b.model, ts) for fam, b in best.items()}
        tracking.configure(s.tracking_uri, s.mlflow_artifact_root)
        champ = registry.alias_version(registry.CHAMPION)
        champ_auc = None
        if champ is not None:
            p = registry.load_version(champ.version).predict(feature_matrix(holdout))["delay_probability"]
            champ_auc = classification_metrics(holdout["label"].to_numpy(), p.to_numpy())["roc_auc"]
        fam = max(scored, key=lambda f: scored[f]["roc_auc"])
        ref = build_reference(ts[ts["split"] == "train"], DRIFT_NUMERIC_FEATURES, CATEGORICAL_FEATURES)
        uri = registry.log_model(best[fam].run_id, best[fam].model, fam, holdout.head(5), ref)
        decision = GateDecision(scored[fam]["roc_auc"], champ_auc, s.gate_min_auc, s.gate_min_delta)
        self.version = registry.register(uri, {"week": self.week, "family": fam, "gate": str(decision.promote)},
                                         alias=registry.CHALLENGER)
        if decision.promote:
            registry.set_alias(registry.CHAMPION, self.version)
        self.next(self.end)

    @step
    def end(self):
        print(f"registered version {self.version}")


if __name__ == "__main__":
    WeeklyTrainingFlow()
