//go:build tools

// Package tools pins kube-router (github.com/cloudnativelabs/kube-router/v2), run by the
// tenancy node tests as the test node's NetworkPolicy enforcer (scripts/kuberouter.sh,
// testbed/netpol_enforcer.py). Only a test-node enforcer: see docs/testing-control-plane.md.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
