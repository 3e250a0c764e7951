//go:build tools

// Package tools pins the Kubernetes programs built by scripts/controlplane.sh
// (control plane) and scripts/cluster.sh (the one-node cluster). It is never
// compiled; the blank imports keep the programs' dependencies in go.mod/go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
