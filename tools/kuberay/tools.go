//go:build tools

// Package tools pins the KubeRay operator (the module root is its main package),
// built by scripts/cluster.sh at the version of the CRDs the tests install.
package tools

import _ "github.com/ray-project/kuberay/ray-operator"
