"""Statistics of mlsteward (DESIGN §5): reference profiles, drift tests, experiment analysis and bandits.

Shared by the tool verbs (`mlsteward profile|drift|ab`), the router (bandits) and the operator (drift monitors and
experiments), which imports these modules only where it analyses, never at start-up.

- `stats.profile`: `build_profile(columns, ...) -> Profile`.
- `stats.drift`: `drift_report(reference, current, thresholds=...) -> DriftReport`; `stats.pooling` (re-exported by
  `stats.drift`): `pool_windows(windows, ...)`.
- `stats.ab`: `ArmStats`, `two_proportion_ztest`, `chi2_proportions`, `welch_ttest`, `prob_best`,
  `sample_ratio_mismatch`, `msprt`; `stats.comparison`: `compare` (the offline comparison of `mlsteward ab`).
- `stats.bandits`: `epsilon_greedy`, `thompson`, `thompson_allocation`.
- `stats.paired`: `wilson`, `mcnemar_exact`, `newcombe_paired`, `paired_proportions`, `paired_t` (a shadow version
  against the served one on the same requests).
- `stats.table`: the CSV reader of the tool verbs.
"""
