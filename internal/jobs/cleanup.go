package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgqueue/queue/internal/kinds"
)

// cleanupData is CLEANUP's data; path and pattern are accepted and ignored by
// expired_sessions.
type cleanupData struct {
	UserID     *string `json:"userId" validate:"omitnil,min=1,max=128"`
	TargetType string  `json:"targetType" validate:"required,oneof=temp_files old_logs expired_sessions"`
	OlderThan  *int64  `json:"olderThan" validate:"required,min=0"`
	Path       *string `json:"path" validate:"omitnil,relpath"`
	Pattern    *string `json:"pattern" validate:"omitnil,min=1,max=255,globpattern"`
}

// sessionsBatch bounds each DELETE, so no statement holds many row locks for long.
const sessionsBatch = 1000

// CleanupResult is CLEANUP's result.
type CleanupResult struct {
	TargetType string `json:"targetType"`
	Deleted    int64  `json:"deleted"`    // files or session rows
	BytesFreed int64  `json:"bytesFreed"` // files only
	Matched    int64  `json:"matched"`    // files that matched the pattern (any age)
	Failed     int64  `json:"failed"`     // files that could not be removed (logged)
}

type cleanupHandler struct{ deps Deps }

func cleanupKind(deps Deps) kinds.Kind {
	return kinds.Define(TypeCleanup, (&cleanupHandler{deps: deps}).run)
}

func (h *cleanupHandler) run(ctx context.Context, job *kinds.Job, d *cleanupData) (any, error) {
	// Beyond what a Duration holds nothing is that old; clamp instead of overflowing.
	olderThan := time.Duration(min(*d.OlderThan, math.MaxInt64/int64(time.Millisecond))) * time.Millisecond
	var res CleanupResult
	var err error
	switch d.TargetType {
	case "expired_sessions":
		res, err = h.sessions(ctx, *d.OlderThan)
	case "temp_files":
		res, err = removeOldFiles(ctx, h.deps.jobLog(job), "CLEANUP_ROOTS (temp_files)", h.deps.CleanupTempRoot, d.Path, d.Pattern, olderThan)
	case "old_logs":
		res, err = removeOldFiles(ctx, h.deps.jobLog(job), "CLEANUP_ROOTS (old_logs)", h.deps.CleanupLogsRoot, d.Path, d.Pattern, olderThan)
	}
	if err != nil {
		return nil, err
	}
	res.TargetType = d.TargetType
	h.deps.jobLog(job).Info("cleanup done", "target", d.TargetType, "deleted", res.Deleted, "bytes_freed", res.BytesFreed)
	return res, nil
}

func (h *cleanupHandler) sessions(ctx context.Context, olderThanMs int64) (CleanupResult, error) {
	if h.deps.Pool == nil {
		return CleanupResult{}, kinds.Permanent(errNotConfigured)
	}
	table := h.deps.SessionsTable
	if table == "" {
		return CleanupResult{}, kinds.Permanentf("SESSIONS_TABLE is not configured")
	}
	var res CleanupResult
	for {
		n, err := sessionsDeleteBatch(ctx, h.deps.Pool, table, olderThanMs, sessionsBatch)
		if err != nil {
			var pg *pgconn.PgError
			if errors.As(err, &pg) {
				switch pg.Code {
				case "42P01": // undefined_table
					return res, kinds.Permanentf("SESSIONS_TABLE %q does not exist", table)
				case "42703": // undefined_column
					return res, kinds.Permanentf("SESSIONS_TABLE %q has no expires_at column", table)
				case "42501", "42883": // insufficient_privilege; expires_at is not a time
					return res, kinds.Permanentf("delete expired sessions from %q: %w", table, err)
				}
			}
			return res, fmt.Errorf("delete expired sessions from %q: %w", table, err)
		}
		res.Deleted += n
		if n < sessionsBatch {
			return res, nil
		}
	}
}

// removeOldFiles deletes the regular files under dir (or its sub-folder sub) last modified
// more than olderThan ago whose names match pattern. Everything goes through an os.Root
// on dir: symlinks are neither followed nor deleted, and no path leads outside.
func removeOldFiles(ctx context.Context, log *slog.Logger, what, dir string, sub, pattern *string, olderThan time.Duration) (CleanupResult, error) {
	var res CleanupResult
	root, err := openRoot(what, dir)
	if err != nil {
		return res, err
	}
	defer root.Close()
	if sub != nil {
		subRoot, err := root.OpenRoot(*sub)
		if err != nil {
			return res, fileError("open folder", *sub, err)
		}
		defer subRoot.Close()
		root = subRoot
	}
	cutoff := time.Now().Add(-olderThan)
	err = fs.WalkDir(root.FS(), ".", func(name string, entry fs.DirEntry, err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if err != nil {
			// An unreadable folder is skipped, not fatal: the rest can still be cleaned.
			log.Warn("cleanup: cannot read", "path", name, "err", err)
			res.Failed++
			return nil
		}
		// Symlinks and special files are left alone (WalkDir never descends into a
		// symlinked folder either).
		if !entry.Type().IsRegular() {
			return nil
		}
		if pattern != nil {
			if ok, _ := path.Match(*pattern, entry.Name()); !ok {
				return nil
			}
		}
		res.Matched++
		info, err := entry.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			return nil
		}
		if err := root.Remove(name); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				log.Warn("cleanup: cannot remove", "path", name, "err", err)
				res.Failed++
			}
			return nil
		}
		res.Deleted++
		res.BytesFreed += info.Size()
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("walk %s: %w", what, err)
	}
	return res, nil
}

// OutputsRemoved counts what RemoveExpiredOutputs deleted.
type OutputsRemoved struct {
	Files int64
	Bytes int64
}

// RemoveExpiredOutputs deletes exports in exportDir and FILE_PROCESS outputs in
// filesRoot/processed last modified more than retention ago (EXPORT_RETENTION). The
// worker's maintenance leader may call it periodically. Missing folders are not an error.
func RemoveExpiredOutputs(ctx context.Context, log *slog.Logger, exportDir, filesRoot string, retention time.Duration) (OutputsRemoved, error) {
	var total OutputsRemoved
	folders := []struct{ what, dir string }{
		{"EXPORT_DIR", exportDir},
		{"FILES_ROOT/processed", filepath.Join(filesRoot, processedDir)},
	}
	if log == nil {
		log = slog.Default()
	}
	for _, f := range folders {
		if f.dir == "" || filesRoot == "" && f.what != "EXPORT_DIR" {
			continue
		}
		if _, err := os.Stat(f.dir); errors.Is(err, os.ErrNotExist) {
			continue
		}
		res, err := removeOldFiles(ctx, log, f.what, f.dir, nil, nil, retention)
		total.Files += res.Deleted
		total.Bytes += res.BytesFreed
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
