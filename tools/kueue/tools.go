//go:build tools

// Package tools pins Kueue's manager (cmd/kueue), built by scripts/cluster.sh.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
