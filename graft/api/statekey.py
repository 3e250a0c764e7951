"""The per-job state key: what lets a job tell the files Graft wrote from files a tenant planted.

A job's storage is tenant-writable, and Ray unpickles parts of what it restores (the Tune experiment:
`tuner.pkl`, experiment and searcher state) and DeepSpeed unpickles its checkpoint shards. Graft
therefore keeps an HMAC-SHA256 manifest of those files, keyed with a per-job key the tenant can
neither read nor write, and restores nothing the manifest does not vouch for (graft.jobs.signing).

On Kubernetes the operator creates the key, once per RayJob, in a Secret in the job's namespace
(`generateName` with the prefix below, so no tenant can create it first; owned by the FineTuneJob;
the operator never reads it back), and every Ray container of the RayJob gets it as the env
`STATE_KEY_ENV` through a secretKeyRef. Elsewhere (`graft run`, a shared Ray cluster) the job keeps
it in a file under Graft's state directory on the driver's machine, outside every job's storage.
"""

from __future__ import annotations

STATE_KEY_ENV = "GRAFT_STATE_KEY"
STATE_KEY_SECRET_PREFIX = "graft-state-"  # + the job name + "-" + a suffix the API server picks
STATE_KEY_SECRET_KEY = "key"
STATE_DIR_ENV = "GRAFT_STATE_DIR"  # where `graft run` and shared clusters keep the key; default ~/.local/state/graft


def state_key_secret_prefix(job_name: str) -> str:
    """`generateName` of the key's Secret for one FineTuneJob."""
    return f"{STATE_KEY_SECRET_PREFIX}{job_name[:200]}-"  # the API server appends 5 characters (<= 253 in all)
