"""Ray Serve application for exported text-classification models.

- `graft.serving.args`: `ServeArgs` and `serve_config` (pure; no Ray needed).
- `graft.serving.app`: `build_app`, the Serve app builder (`graft.serving.app:build_app`).
- `graft.serving.deploy`: `deploy_local` / `shutdown_local` on a local Ray.
"""
