// Package migrations holds the goose SQL migrations of the queue schema, embedded so that
// every binary can check or apply them.
package migrations

import "embed"

// FS holds the migration files, named NNNNN_name.sql.
//
//go:embed *.sql
var FS embed.FS
