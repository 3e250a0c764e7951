"""The test cluster's certificates and kubeconfigs, made with ``openssl``.

:class:`ClusterPki` holds a throwaway CA in one directory and signs what the control plane and the
node need: the API server's serving certificate, the ServiceAccount signing key, client
certificates (kubelet, the API server towards kubelets) and serving certificates (webhooks).
:func:`write_kubeconfig` writes a kubeconfig for a token or a client certificate.

Standard library and ``openssl`` only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testbed.process import ProcessError

APISERVER_SANS = (
    "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
    "DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1"  # 10.0.0.1: the kubernetes Service
)


class PkiError(ProcessError):
    """An openssl command failed; the message carries its stderr."""


class ClusterPki:
    """A CA and what it signed, as files in ``directory`` (``ca.crt``, ``apiserver.crt``,
    ``sa.key``/``sa.pub``, ``tokens.csv``, ``<name>.crt``/``.key``)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    def create(self, admin_token: str, node_ip: str | None = None) -> None:
        """The CA, the API server's serving certificate (for loopback, the in-cluster names and
        ``node_ip``), the ServiceAccount key pair, and a static token file with ``admin_token`` in
        group ``system:masters``. With ``node_ip``, also the API server's client certificate
        towards kubelets (``kubelet-client``: logs, exec)."""
        self.dir.mkdir(parents=True)
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                      "-out", "ca.crt", "-days", "3", "-subj", "/CN=graft-test-ca")
        sans = APISERVER_SANS + (f",IP:{node_ip}" if node_ip else "")
        self._sign("apiserver", "/CN=kube-apiserver",
                   f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
        self._openssl("genrsa", "-out", "sa.key", "2048")
        self._openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        (self.dir / "tokens.csv").write_text(f'{admin_token},admin,admin-uid,"system:masters"\n')
        if node_ip:
            self.sign_client_cert("kubelet-client", "kube-apiserver-kubelet-client", "system:masters")

    def sign_client_cert(self, name: str, cn: str, org: str) -> tuple[Path, Path]:
        """A client certificate ``<name>.crt`` (+ ``.key``) for user ``cn`` in group ``org``.
        Returns (cert, key)."""
        return self._sign(name, f"/O={org}/CN={cn}", "extendedKeyUsage=clientAuth\n")

    def sign_serving_cert(self, name: str, sans: str = "IP:127.0.0.1,DNS:localhost") -> tuple[Path, Path]:
        """A serving certificate ``<name>.crt`` (+ ``.key``) for ``sans``, e.g. for a webhook the
        API server calls. Returns (cert, key)."""
        return self._sign(name, f"/CN={name}",
                          f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")

    def _sign(self, name: str, subj: str, ext: str) -> tuple[Path, Path]:
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj)
        (self.dir / f"{name}.ext").write_text(ext)
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                      "-out", f"{name}.crt", "-days", "3", "-extfile", f"{name}.ext")
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"

    def _openssl(self, *args: str) -> None:
        p = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=self.dir)
        if p.returncode != 0:
            raise PkiError(f"openssl {' '.join(args)} failed: {p.stderr}")


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, credentials: dict[str, str],
                     namespace: str | None = None) -> Path:
    """A kubeconfig (JSON, which is valid kubeconfig YAML) for ``server``, trusting ``ca_file``,
    as ``user`` with ``credentials`` (``{"token": ...}`` or ``{"client-certificate": ...,
    "client-key": ...}``), mode 0600. Returns ``path``."""
    context: dict[str, str] = {"cluster": "graft-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "graft-test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "graft-test", "context": context}],
        "current-context": "graft-test",
    }
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)
    return path
