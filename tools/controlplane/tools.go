//go:build tools

// Package tools pins the Kubernetes control-plane programs built by
// scripts/controlplane.sh. It is never compiled; the blank imports keep the
// programs' dependencies in go.mod/go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
