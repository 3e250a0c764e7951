"""Where Ray work runs: KubeRay objects (rayjob.py) or a long-lived Ray cluster (shared.py)."""
