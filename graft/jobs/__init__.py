"""Training and tuning entrypoint that runs inside Ray (Train + Tune + DeepSpeed).

Import submodules directly; this package's `__init__` stays import-light so `graft.jobs.sources`
and `graft.jobs.preflight` can be used without Ray, torch or transformers.
"""
