# %% [markdown]
# # deqlab from a notebook: run -> table -> figure -> best trial
#
# A small study on the embedded digits data (DEQ against SkipDEQ, two seeds, one epoch each: about a
# minute on two cores), read back as DataFrames and the dashboard's figure. The cells (`# %%`) open in
# Jupyter through jupytext, in VS Code or in PyCharm; `python docs/notebook.py` runs them all (the test
# suite does, tests/test_api.py). Results land in `$DEQLAB_STORAGE`, else `./results`.

# %%
import os
import time

import deqlab

storage = os.environ.get("DEQLAB_STORAGE", "results")
study_file = {
    "name": "notebook",
    "base": {"epochs": 1, "data": {"name": "digits", "subset": 300, "test_subset": 150, "batch_size": 32},
             "model": {"name": "mlp", "options": {"width": 16, "inner": 32}}, "deq": {"tol": 1e-3, "max_iter": 20}},
    "space": {"deq.init": {"grid": ["zeros", "skip"]}, "seed": {"grid": [0, 1]}},
    "objectives": [{"metric": "test_acc", "mode": "max"}, {"metric": "nfe_fwd", "mode": "min"}],
    "search": {"algorithm": "grid"},
}

# %% [markdown]
# ## Run it
# The driver of `deqlab run`: the same checks before Ray starts, the same progress lines and closing
# table. A study file works the same way (`deqlab.run_study("studies/quickstart.yaml")`); keyword
# arguments override its sections. A name already used is refused, so each run gets a timestamp.

# %%
study = deqlab.run_study(study_file, storage=storage, name=time.strftime("notebook-%Y%m%d-%H%M%S"))
study

# %% [markdown]
# ## The comparison table
# What `deqlab export --format csv` prints, as a DataFrame: mean and std over the seeds of every
# (init) group, accuracy in %, and with a baseline the speed-up with its bootstrap interval.

# %%
table = study.table(by="init", metrics="test_acc,nfe_fwd,epoch_time_s", baseline="init=zeros")
print(table.to_string())

# %% [markdown]
# ## The figure
# The dashboard's Compare scatter: one point per trial, one colour per init mode, the Pareto front of the
# two objectives. In a notebook the figure shows itself; here it is also saved as HTML.

# %%
fig = study.figure("nfe_fwd", "test_acc", color="init")
fig.write_html(os.path.join(study.path, "compare.html"))

# %% [markdown]
# ## The best trial
# Direction from the study's objectives (else the metric catalogue); only completed trials compete.

# %%
best = study.best("test_acc")
print(f"best trial {best['trial_id']}: init {best['param.deq.init']}, seed {best['param.seed']}, "
      f"test accuracy {best['test_acc']:.1%}, {best['nfe_fwd']:.1f} forward NFE per sample")

# %% [markdown]
# Every epoch of every trial, and any study opened again later (a running one too), without torch:

# %%
again = deqlab.open_study(study.path)
print(again.epochs[["trial_id", "epoch", "status", "test_acc", "nfe_fwd"]].to_string(index=False))
