//go:build tools

// Package tools pins etcd, built by scripts/controlplane.sh. Never compiled.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
