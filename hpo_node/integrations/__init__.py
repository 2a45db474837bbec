"""Adapters of hpo_node's schedulers, searchers and predictors to other libraries.

- :mod:`hpo_node.integrations.ray_tune`: Ray Tune ``TrialScheduler`` adapters and callbacks, and the
  trainable contract they check.
- :mod:`hpo_node.integrations.ray_search`: our searchers as Ray Tune ``Searcher`` s.
- :mod:`hpo_node.integrations.optuna_pruner`: :class:`SwiftPruner`, Swift as an Optuna pruner.

The modules are named after what they adapt, not after the library, so they never shadow ``ray`` or
``optuna``. Each imports its library on import; this package imports none of them.
"""

from __future__ import annotations
