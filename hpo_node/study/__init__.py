"""The main job: an HPO study from a TOML file, on Ray Tune, with the gateway as predictor.

The code, by concern: :mod:`~hpo_node.study.config` (the TOML document -> :class:`StudyConfig`),
:mod:`~hpo_node.study.build` (Tune's space, scheduler and searcher from the config, through the
algorithm registry :mod:`hpo_node.algorithms` and the space spec :mod:`hpo_node.space`),
:mod:`~hpo_node.study.load` (a TOML file, parsed and checked by building its parts once),
:mod:`~hpo_node.study.run` (gateway, Ray, Tuner; :func:`optimize` from Python),
:mod:`~hpo_node.study.outputs` (trials.csv, best.json, summary.json, the pictures) and
:mod:`~hpo_node.study.command` (``hpo-node run``).

The trainable is the user's Ray Tune function trainable (``[trainable] function =
"module:callable"``, or a callable given to :func:`optimize`), else the digits one
(:func:`hpo_node.trainables.train_digits`). Every trial's config holds the ``[space]`` draws, the
other ``[trainable]`` entries and ``max_epochs`` (``[algorithm] max_resource``); the trainable
reports ``resource_attr`` (``epoch``: 1, 2, ...) and the metric once per epoch, with a checkpoint
it restores from when Tune hands it one (paused trials are resumed, not restarted).

``hpo-node run CONFIG`` (:func:`run_main`):

1. reads the study (:func:`load_study`, format below);
2. starts ``qpu-gateway serve`` as a child process on a free port (backend from the config, SQLite
   store in the output directory) and waits for its health check, unless ``--gateway HOST:PORT``
   names a running one or the study needs no gateway;
3. starts a local Ray (``num_cpus`` from the config, no dashboard) unless ``--ray-address`` names a
   cluster; a user trainable's folder goes to every worker as the job's ``runtime_env``
   ``working_dir`` (so it imports on every node);
4. runs the study with the scheduler adapter of :mod:`hpo_node.integrations.ray_tune`, printing
   progress;
5. writes ``<output_dir>/<name>/`` (every field: docs/outputs.md): ``trials.csv``,
   ``best.json``, ``curves.png``, ``best_vs_epochs.png``/``.csv``, ``summary.json``
   (epochs used, trials per outcome, predictor counters), ``scheduler_state.json`` (the
   scheduler's state for inspection; ``--resume`` does not read it), and Ray's own
   experiment directory ``ray/<name>``, or ``<storage>/<name>`` with ``[study] storage``
   (``--resume`` continues an interrupted study from it with ``Tuner.restore``, the scheduler's
   state included); stops the gateway it started.

A second run of a ``study.name`` whose folder holds a study is refused (one line, exit 2):
``--resume`` continues it (its config must match the ``study.json`` saved when it started, but
for ``study.time_budget_s``, ``study.num_cpus``, ``predictor.timeout_s``,
``predictor.retry_after_s``, ``[gateway]`` and ``[resources]``), ``--overwrite`` deletes it and
starts over. A trial whose trainable raises is retried twice from its last checkpoint, then
ends in error (one line with the exception; ``error`` in ``trials.csv`` and ``summary.json``)
while the study goes on. Exit status: 0 when the study ended (also at its time budget, and with
failed trials if one trial reported epochs without failing), 2 for a configuration error (a TOML
error, an unknown or bad ``algorithm.params`` entry, an unset ``gateway.token_env``, a token the
gateway refuses for ``Fit``, a ``study.metric`` the trainable does not report), 1 when every
trial that ran failed (:class:`~hpo_node.study.run.StudyFailed`, naming the first error), every
value every trial reported was NaN/inf (``StudyFailed`` too), or the trainable broke the
trainable contract, 130 after Ctrl-C (the command that resumes is printed).

Study TOML::

    [study]
    name = "digits"              # results/<name>/
    output_dir = "results"       # relative to the current directory, or absolute
    seed = 0                     # sampling of configurations, predictor seeds
    trials = 27                  # configurations (asha, swift-asha); hyperband fixes its own
    time_budget_s = 240          # optional wall-clock budget
    metric = "val_loss"
    mode = "min"
    resource_attr = "epoch"      # the result key that counts epochs (1, 2, ... one per report)
    num_cpus = 2                 # local Ray only
    storage = "ray"              # Ray Tune's storage_path (trial checkpoints, experiment state):
                                 # a local path, relative to <output_dir>/<name>/ (default "ray"),
                                 # or a URI passed to Ray unchanged (s3://bucket/prefix, gs://...,
                                 # file:///abs/path): every node must reach it

    [algorithm]                  # asha | hyperband | swift-asha | swift-hyperband
    name = "swift-asha"
    max_resource = 27            # epochs (R)
    eta = 3
    params = { d = 6 }           # constructor options of the core scheduler
    searcher = "random"          # random (default) | tpe | gp-ei | evolution (hpo_node.search)
    searcher_params = { gamma = 0.15 }   # constructor options of the searcher (not for random)

    [predictor]                  # Swift variants only
    kind = "gateway"             # gateway | svr | qsvr (the last two in-process)
    timeout_s = 10.0             # deadline of each gateway call
    retry_after_s = 5.0          # after a failure, skip the gateway this long
    params = { num_reads = 200 } # QSVR parameters (gateway, qsvr) or SVR ones (svr)

    [gateway]
    address = "auto"             # auto: start a child; none: no gateway; or HOST:PORT
    backend = "neal"
    # token_env = "QHPO_GATEWAY_TOKEN"   # a secured gateway: the env variable with the token,
    # tls_ca = "ca.pem"                  # TLS; tls_cert + tls_key for mutual TLS

    [resources]                  # per trial; fractional GPUs allowed
    cpu = 1
    gpu = 0

    [trainable]                  # fixed entries of every trial's config
    function = "my_model:train"  # optional: a Ray Tune function trainable (module beside the
                                 # TOML, else on sys.path); default: the digits trainable
    model = "mlp"                # (with the digits trainable: keys of hpo_node.trainables.DEFAULTS)

    [space]                      # sampled entries (any names with a user trainable)
    lr = { type = "loguniform", low = 1e-4, high = 0.3 }
    dropout = { type = "uniform", low = 0.0, high = 0.5 }
    batch_size = { type = "quniform", low = 16, high = 128, q = 16 }  # multiples of q
    layers = { type = "int", low = 1, high = 4 }  # both ends included; log = true: log-uniform
    hidden = { type = "choice", values = [32, 64, 128] }
"""

from hpo_node.study.build import (
    build_scheduler,
    build_searcher,
    check_study,
    fixed_param_space,
    hparam_encoder,
    n_trials,
    param_space,
)
from hpo_node.study.command import add_run_parser, run_args, run_main
from hpo_node.study.config import (
    GATEWAY_CONNECTION_KEYS,
    PREDICTOR_KINDS,
    StudyConfig,
    apply_overrides,
    parse_study,
)
from hpo_node.study.load import load_study, study_from_dict
from hpo_node.study.outputs import StudyResult, trial_rows, write_outputs
from hpo_node.study.run import StudyFailed, optimize, run_study

__all__ = [
    "GATEWAY_CONNECTION_KEYS",
    "PREDICTOR_KINDS",
    "StudyConfig",
    "StudyFailed",
    "StudyResult",
    "add_run_parser",
    "apply_overrides",
    "build_scheduler",
    "build_searcher",
    "check_study",
    "fixed_param_space",
    "hparam_encoder",
    "load_study",
    "n_trials",
    "optimize",
    "param_space",
    "parse_study",
    "run_args",
    "run_main",
    "run_study",
    "study_from_dict",
    "trial_rows",
    "write_outputs",
]
