"""Tenant-safety rules every spec obeys, whoever runs it (pure; used by the models and by admission).

- Ray cluster addresses are `[http[s]://]HOST[:PORT][/]`: no userinfo, path, query or fragment.
- Paths and URIs never climb out of where they point (`..` segments, also percent-encoded).
- On Kubernetes (`graft.operator.admission`), environment keys are allowlisted: a tenant sets only
  DEFAULT_ENV_KEYS (DEFAULT_SECRET_ENV_KEYS from Secrets) or what every selecting policy's
  allowedEnvKeys allows, in any spelling; never what the operator sets or what changes which code
  runs (loader, interpreter, Ray and hub endpoints), and never credentials in plain text (reference
  a Secret with `runtime.secretEnv` instead).
"""

from __future__ import annotations

import fnmatch
import re
from urllib.parse import unquote, urlsplit

from graft.api.locations import LocationError, parse
from graft.api.locations import under as locations_under

# RE2- and Python-compatible (it goes into the CRD as a `pattern`).
CLUSTER_ADDRESS_PATTERN = (
    r"^(https?://)?([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/?$"
)
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a Kubernetes object name (DNS-1123 label)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

# Environment keys a tenant may never set, even where a policy's allowedEnvKeys lists them: the
# operator's own, and those that change which code runs or where it comes from. Compared
# case-insensitively; prefixes end with `_` or are whole families (PYTHON*).
RESERVED_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON", "RAY_", "GRAFT_", "HF_HUB_", "KUBERNETES_")
RESERVED_ENV_KEYS = frozenset({
    "PATH", "HOME", "HF_ENDPOINT", "HF_HOME", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
    "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE", "TOKENIZERS_PARALLELISM", "CUDA_VISIBLE_DEVICES",
    "MASTER_ADDR", "MASTER_PORT", "BASH_ENV", "ENV", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
})
# What a tenant may set without a policy listing it (allowlist; everything else needs allowedEnvKeys):
# knobs that change neither which code runs nor where data, downloads or storage go.
DEFAULT_ENV_KEYS = frozenset({
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NCCL_DEBUG", "PYTORCH_CUDA_ALLOC_CONF", "CUDA_LAUNCH_BLOCKING",
    "TRANSFORMERS_VERBOSITY", "DS_ACCELERATOR", "TZ", "LANG", "LC_ALL", "AWS_REGION", "AWS_DEFAULT_REGION",
})
# Secret-sourced names allowed by default besides DEFAULT_ENV_KEYS: the usual credentials (never an
# endpoint such as AWS_ENDPOINT_URL*, which would send them elsewhere).
DEFAULT_SECRET_ENV_KEYS = DEFAULT_ENV_KEYS | frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
})
# Names that hold secrets: plain-text values would land in a ConfigMap, the RayJob and Ray's job list.
_CREDENTIAL = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_KEY|_KEY$|CONNECTION_STRING)")

# `..` as a path segment, also percent-encoded (CRD rule on every path/URI field).
TRAVERSAL_CEL_RULES = [
    {
        "rule": "!self.matches('(^|[/\\\\\\\\])\\\\.\\\\.([/\\\\\\\\]|$)') && !self.lowerAscii().contains('%2e')",
        "message": "must not contain '..' path segments or percent-encoded dots: give the path without them",
    }
]


def reserved_env_problem(key: str) -> str | None:
    """Why no tenant may set `key` whatever the policies say (None when a policy could allow it):
    not an environment variable name, or reserved in any spelling (`ld_preload` = `LD_PRELOAD`)."""
    if not re.fullmatch(ENV_NAME_PATTERN, key):
        return f"{key!r} is not an environment variable name (letters, digits and _, not starting with a digit)"
    upper = key.upper()
    if upper in RESERVED_ENV_KEYS or upper.startswith(RESERVED_ENV_PREFIXES):
        return (f"{key} is reserved: the operator sets it, or it changes which code runs "
                "(LD_*, PYTHON*, RAY_*, GRAFT_*, HF_HUB_*, HF_ENDPOINT, PATH, ...); remove it")
    return None


def credential_env_problem(key: str) -> str | None:
    """Why an unreserved `key` may not carry a plain-text value (None when it may): it names a credential."""
    if reserved_env_problem(key) is None and _CREDENTIAL.search(key.upper()):
        return (f"{key} looks like a credential: never put one in runtime.env (it is copied into ConfigMaps "
                "and Ray's job list); reference a Secret with runtime.secretEnv instead")
    return None


def env_key_problem(key: str) -> str | None:
    """Why `key` may not be set in plain text through `runtime.env` (None when a policy could allow it)."""
    return reserved_env_problem(key) or credential_env_problem(key)


def env_key_allowed(key: str, patterns: list[str], *, from_secret: bool) -> bool:
    """True when `key` is in the default allowlist (DEFAULT_SECRET_ENV_KEYS for a Secret-sourced
    name, else DEFAULT_ENV_KEYS) or matches one of a policy's allowedEnvKeys globs, compared
    case-insensitively (`http_proxy` is `HTTP_PROXY`). Reserved keys are refused before this."""
    upper = key.upper()
    if upper in (DEFAULT_SECRET_ENV_KEYS if from_secret else DEFAULT_ENV_KEYS):
        return True
    return any(fnmatch.fnmatchcase(upper, pattern.upper()) for pattern in patterns)


def traversal_problem(value: str) -> str | None:
    """Why a path or URI may escape where it points (None when it cannot): a `..` segment,
    plain or percent-encoded, a backslash segment, or a NUL."""
    if "\x00" in value:
        return f"{value!r} contains a NUL character"
    if "%2e" in value.lower():
        return f"{value!r} contains a percent-encoded dot; write the path plainly"
    decoded = unquote(value)
    segments = re.split(r"[/\\]", decoded)
    if ".." in segments:
        return f"{value!r} contains a '..' segment; give the path without it"
    return None


def normalise(value: str) -> str:
    """The canonical form of a path or URI (`graft.api.locations.canonical`: `file://` and `//`
    read as local paths, `.` segments and repeated slashes collapsed), the form every allowlist is
    checked against; a URI keeps a trailing slash (so `s3://b/dir/` still matches the glob `s3://b/dir/*`).
    A value with no single reading is returned unchanged (callers refuse it)."""
    try:
        location = parse(value)
    except LocationError:
        return value
    return f"{location}/" if not location.local and value.endswith("/") else str(location)


def under(value: str, prefix: str) -> bool:
    """True when `value` is `prefix` or lies below it, on a path boundary (`graft.api.locations.under`;
    `/mnt/graft/team-a` covers `/mnt/graft/team-a/x`, never `/mnt/graft/team-ab`). A prefix that is
    only a scheme (`package://`) covers every location of that scheme."""
    try:
        if prefix.endswith("://"):
            return parse(value).scheme == parse(prefix + "x").scheme
        return locations_under(value, prefix)
    except LocationError:
        return False


def cluster_host(address: str) -> tuple[str, int | None]:
    """(host, port) of a cluster address that matches CLUSTER_ADDRESS_PATTERN."""
    url = address if "://" in address else f"http://{address}"
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port


def in_namespace_host(host: str, namespace: str) -> bool:
    """True for a Service DNS name in `namespace`: `SVC.NS`, `SVC.NS.svc`, `SVC.NS.svc.cluster.local`."""
    labels = host.rstrip(".").split(".")
    if len(labels) < 2 or labels[1] != namespace:
        return False
    return labels[2:] in ([], ["svc"], ["svc", "cluster", "local"])
