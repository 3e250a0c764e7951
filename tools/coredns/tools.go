//go:build tools

// Package tools pins CoreDNS (the cluster DNS of scripts/cluster.sh); the
// program is the module root, built with 'go build github.com/coredns/coredns'.
package tools

import _ "github.com/coredns/coredns"
