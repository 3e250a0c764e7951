"""The Graft operator: kopf handlers driving KubeRay (RayJob for training, RayService for serving).

Pure parts (no I/O): `builders` (child objects), `reconcile` (status), `promotion` (decisions).
Kubernetes API calls live in `kube`; `handlers` wires them together for kopf; `main` runs it.
"""
