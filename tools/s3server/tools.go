//go:build tools

// Package tools pins versitygw (github.com/versity/versitygw/cmd/versitygw), the S3-compatible
// server the storage tests run on loopback, built by scripts/s3server.sh. Never compiled.
package tools

import (
	_ "github.com/versity/versitygw/cmd/versitygw"
)
