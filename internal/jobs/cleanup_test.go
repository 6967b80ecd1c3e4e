package jobs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/kinds"
)

// writeAged writes a file and sets its modification time age ago.
func writeAged(t *testing.T, dir, name string, size int, age time.Duration) string {
	t.Helper()
	p := writeFile(t, dir, name, make([]byte, size))
	when := time.Now().Add(-age)
	require.NoError(t, os.Chtimes(p, when, when))
	return p
}

func requireExists(t *testing.T, p string, exists bool) {
	t.Helper()
	_, err := os.Lstat(p)
	if exists {
		require.NoError(t, err, p)
	} else {
		require.ErrorIs(t, err, os.ErrNotExist, p)
	}
}

func TestCleanupTempFilesOnlyOldMatchingInsideRoot(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tmp := b.cfg.CleanupTempRoot
	outside := t.TempDir()
	hour := time.Hour

	oldTmp := writeAged(t, tmp, "a.tmp", 100, 2*hour)
	oldNested := writeAged(t, tmp, "uploads/x/b.tmp", 50, 3*hour)
	newTmp := writeAged(t, tmp, "c.tmp", 10, time.Minute)
	oldOther := writeAged(t, tmp, "keep.dat", 10, 5*hour)
	outsideOld := writeAged(t, outside, "victim.tmp", 10, 5*hour)
	outsideDirFile := writeAged(t, outside, "dir/victim2.tmp", 10, 5*hour)
	logs := writeAged(t, b.cfg.CleanupLogsRoot, "old.tmp", 10, 5*hour)
	// Symlinks to old matching files outside: neither followed nor deleted.
	linkFile := filepath.Join(tmp, "link.tmp")
	require.NoError(t, os.Symlink(outsideOld, linkFile))
	require.NoError(t, os.Symlink(filepath.Join(outside, "dir"), filepath.Join(tmp, "linkdir")))

	res, err := run(t, cleanupKind(b.deps), obj{"targetType": "temp_files", "olderThan": hour.Milliseconds(), "pattern": "*.tmp"})
	require.NoError(t, err)
	r := res.(CleanupResult)
	require.Equal(t, CleanupResult{TargetType: "temp_files", Deleted: 2, BytesFreed: 150, Matched: 3}, r)

	requireExists(t, oldTmp, false)
	requireExists(t, oldNested, false)
	requireExists(t, newTmp, true)
	requireExists(t, oldOther, true)
	requireExists(t, outsideOld, true)
	requireExists(t, outsideDirFile, true)
	requireExists(t, linkFile, true)
	requireExists(t, logs, true)
}

func TestCleanupOldLogsInSubfolder(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	logs := b.cfg.CleanupLogsRoot
	inSub := writeAged(t, logs, "api/2026-01.log", 30, 48*time.Hour)
	notInSub := writeAged(t, logs, "worker/2026-01.log", 30, 48*time.Hour)
	outside := t.TempDir()
	require.NoError(t, os.Symlink(outside, filepath.Join(logs, "escape")))
	h := cleanupKind(b.deps)

	res, err := run(t, h, obj{"targetType": "old_logs", "olderThan": 0, "path": "api"})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.(CleanupResult).Deleted)
	requireExists(t, inSub, false)
	requireExists(t, notInSub, true)

	for _, sub := range []string{"escape", "missing"} {
		_, err = run(t, h, obj{"targetType": "old_logs", "olderThan": 0, "path": sub})
		require.Error(t, err, sub)
		require.True(t, kinds.IsPermanent(err), "%s: %v", sub, err)
	}
}

func TestCleanupExpiredSessions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, setupOpts{db: true, env: map[string]string{"SESSIONS_TABLE": "app.user_sessions"}})
	h := cleanupKind(b.deps)
	data := obj{"targetType": "expired_sessions", "olderThan": 0}

	_, err := run(t, h, data)
	require.ErrorContains(t, err, `SESSIONS_TABLE "app.user_sessions" does not exist`)
	require.True(t, kinds.IsPermanent(err))

	_, err = b.pool.Exec(ctx, `
		CREATE SCHEMA app;
		CREATE TABLE app.user_sessions (token text PRIMARY KEY, expires_at timestamptz NOT NULL);
		INSERT INTO app.user_sessions SELECT 'old' || g, now() - interval '2 days' FROM generate_series(1, 2500) g;
		INSERT INTO app.user_sessions SELECT 'recent' || g, now() - interval '1 minute' FROM generate_series(1, 20) g;
		INSERT INTO app.user_sessions SELECT 'live' || g, now() + interval '1 hour' FROM generate_series(1, 30) g;`)
	require.NoError(t, err)

	// Expired more than a day ago: the recently expired stay.
	res, err := run(t, h, obj{"targetType": "expired_sessions", "olderThan": (24 * time.Hour).Milliseconds()})
	require.NoError(t, err)
	require.Equal(t, int64(2500), res.(CleanupResult).Deleted, "more than one batch")
	res, err = run(t, h, data)
	require.NoError(t, err)
	require.Equal(t, int64(20), res.(CleanupResult).Deleted)
	var left int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM app.user_sessions`).Scan(&left))
	require.Equal(t, 30, left)
}

func TestRemoveExpiredOutputs(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	oldExport := writeAged(t, b.cfg.ExportDir, "export-old.csv", 100, 200*time.Hour)
	newExport := writeAged(t, b.cfg.ExportDir, "export-new.csv", 100, time.Hour)
	oldOutput := writeAged(t, b.cfg.FilesRoot, "processed/a-1.png", 40, 200*time.Hour)
	oldInput := writeAged(t, b.cfg.FilesRoot, "a.png", 40, 200*time.Hour)

	removed, err := RemoveExpiredOutputs(context.Background(), quietLogger(), b.cfg.ExportDir, b.cfg.FilesRoot, b.cfg.ExportRetention)
	require.NoError(t, err)
	require.Equal(t, OutputsRemoved{Files: 2, Bytes: 140}, removed)
	requireExists(t, oldExport, false)
	requireExists(t, newExport, true)
	requireExists(t, oldOutput, false)
	requireExists(t, oldInput, true) // inputs are the user's, not outputs

	// A missing folder is nothing to do.
	removed, err = RemoveExpiredOutputs(context.Background(), nil, filepath.Join(t.TempDir(), "none"), t.TempDir(), time.Hour)
	require.NoError(t, err)
	require.Zero(t, removed)
}

// TestBuiltinRegistersOutputRetention: with EXPORT_RETENTION and the output folders set,
// Builtin registers the periodic task the maintenance leader runs, and running it
// deletes the expired exports and processed outputs only.
func TestBuiltinRegistersOutputRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{env: map[string]string{"EXPORT_RETENTION": "24h"}})
	require.Equal(t, 24*time.Hour, b.cfg.ExportRetention)
	oldExport := writeAged(t, b.cfg.ExportDir, "export-old.csv", 100, 25*time.Hour)
	newExport := writeAged(t, b.cfg.ExportDir, "export-new.csv", 100, time.Hour)
	oldOutput := writeAged(t, b.cfg.FilesRoot, "processed/a-1.png", 40, 25*time.Hour)
	newOutput := writeAged(t, b.cfg.FilesRoot, "processed/a-2.png", 40, time.Hour)
	oldInput := writeAged(t, b.cfg.FilesRoot, "a.png", 40, 25*time.Hour)

	tasks := Builtin(b.deps).Tasks()
	require.Len(t, tasks, 1)
	task := tasks[0]
	require.Equal(t, "output retention", task.Name)
	require.Positive(t, task.Every)
	require.NoError(t, task.Run(context.Background()))
	requireExists(t, oldExport, false)
	requireExists(t, newExport, true)
	requireExists(t, oldOutput, false)
	requireExists(t, newOutput, true)
	requireExists(t, oldInput, true)

	// Without a retention, or without any output folder, there is nothing to run.
	for _, s := range []Settings{
		{ExportDir: b.cfg.ExportDir, FilesRoot: b.cfg.FilesRoot},
		{ExportRetention: time.Hour},
	} {
		require.Empty(t, Builtin(Deps{Settings: s}).Tasks(), "%+v", s)
	}
}
