//go:build tools

// Package tools pins helm, built by scripts/controlplane.sh. Never compiled.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
