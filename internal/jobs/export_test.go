package jobs

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/xuri/excelize/v2"
)

// insertJobs adds n jobs straight into queue.jobs (the engine's enqueue is not what is
// tested here): every fifth completed with a result, odd ones EMAIL_SEND, even ones
// CLEANUP, and data with a comma, quotes and a newline to exercise CSV quoting.
func insertJobs(t *testing.T, pool *pgxpool.Pool, n int, pad int) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
		INSERT INTO queue.jobs (id, type, state, data, result, finished_at)
		SELECT 'exp-' || g,
		       CASE WHEN g % 2 = 1 THEN 'EMAIL_SEND' ELSE 'CLEANUP' END,
		       CASE WHEN g % 5 = 0 THEN 'completed' ELSE 'waiting' END,
		       jsonb_build_object('to', 'user' || g || '@example.com', 'note', E'a, "quoted"\nline', 'pad', repeat('x', $2::int)),
		       CASE WHEN g % 5 = 0 THEN '{"ok": true}'::jsonb END,
		       CASE WHEN g % 5 = 0 THEN now() END
		FROM generate_series(1, $1::int) g`, n, pad)
	require.NoError(t, err)
}

func exportFile(t *testing.T, b *bundle, data obj) (ExportResult, []int) {
	t.Helper()
	res, err, progress := runWithProgress(t, exportKind(b.deps), data)
	require.NoError(t, err)
	r := res.(ExportResult)
	info, err := os.Stat(r.Path)
	require.NoError(t, err)
	require.Equal(t, info.Size(), r.Bytes)
	require.Equal(t, b.cfg.ExportDir, filepath.Dir(r.Path))
	return r, progress
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	return records
}

func readJSON(t *testing.T, path string) []map[string]json.RawMessage {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var rows []map[string]json.RawMessage
	require.NoError(t, json.NewDecoder(f).Decode(&rows))
	return rows
}

func readXLSX(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := excelize.OpenFile(path)
	require.NoError(t, err)
	defer f.Close()
	rows, err := f.Rows("Sheet1")
	require.NoError(t, err)
	var out [][]string
	for rows.Next() {
		cols, err := rows.Columns()
		require.NoError(t, err)
		out = append(out, cols)
	}
	require.NoError(t, rows.Close())
	return out
}

var allJobColumns = []string{"id", "type", "state", "priority", "data", "result", "progress", "attempts_made",
	"max_attempts", "error", "errors", "run_at", "created_at", "started_at", "finished_at"}

func TestExportTenThousandJobsInEachFormat(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{db: true})
	insertJobs(t, b.pool, 10_000, 10)

	t.Run("csv", func(t *testing.T) {
		t.Parallel()
		r, progress := exportFile(t, b, obj{"exportType": "csv", "filters": obj{}})
		require.Equal(t, int64(10_000), r.Rows)
		require.Equal(t, "csv", r.Format)
		require.True(t, strings.HasSuffix(r.Path, ".csv"))
		records := readCSV(t, r.Path)
		require.Len(t, records, 10_001)
		require.Equal(t, allJobColumns, records[0])
		require.Equal(t, "exp-1", records[1][0])
		var data map[string]any
		require.NoError(t, json.Unmarshal([]byte(records[1][4]), &data))
		require.Equal(t, "a, \"quoted\"\nline", data["note"])
		require.Equal(t, "", records[1][5], "NULL result is an empty cell")
		require.Equal(t, 100, progress[len(progress)-1])
		require.Contains(t, progress, 50, "progress is reported as rows are written")
	})
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		r, _ := exportFile(t, b, obj{"exportType": "json", "filters": obj{}})
		require.Equal(t, int64(10_000), r.Rows)
		rows := readJSON(t, r.Path)
		require.Len(t, rows, 10_000)
		for _, row := range rows {
			require.Len(t, row, len(allJobColumns))
		}
		require.JSONEq(t, `"exp-5"`, string(rows[4]["id"]))
		require.JSONEq(t, `{"ok": true}`, string(rows[4]["result"]), "jsonb is embedded as JSON")
		require.JSONEq(t, `5`, string(rows[4]["priority"]))
		require.Equal(t, "null", string(rows[0]["result"]))
		require.Regexp(t, `^"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"$`, string(rows[0]["created_at"]))
	})
	t.Run("xlsx", func(t *testing.T) {
		t.Parallel()
		r, _ := exportFile(t, b, obj{"exportType": "xlsx", "filters": obj{}})
		require.Equal(t, int64(10_000), r.Rows)
		rows := readXLSX(t, r.Path)
		require.Len(t, rows, 10_001)
		require.Equal(t, allJobColumns, rows[0])
		require.Equal(t, "exp-10000", rows[10_000][0])
		require.Equal(t, "5", rows[1][3])
	})
	t.Run("filtered columns", func(t *testing.T) {
		t.Parallel()
		for _, format := range []string{"csv", "json", "xlsx"} {
			r, _ := exportFile(t, b, obj{
				"exportType": format, "columns": []string{"id", "state", "finished_at"},
				"filters": obj{"type": "EMAIL_SEND", "state": "completed", "from": "2000-01-01T00:00:00Z"},
			})
			// odd multiples of 5 up to 10,000
			require.Equal(t, int64(1000), r.Rows, format)
			require.Equal(t, []string{"id", "state", "finished_at"}, r.Columns)
			switch format {
			case "csv":
				records := readCSV(t, r.Path)
				require.Len(t, records, 1001)
				require.Equal(t, []string{"id", "state", "finished_at"}, records[0])
				require.Equal(t, "completed", records[1][1])
			case "json":
				rows := readJSON(t, r.Path)
				require.Len(t, rows, 1000)
				require.Len(t, rows[0], 3)
			case "xlsx":
				require.Len(t, readXLSX(t, r.Path), 1001)
			}
		}
		r, _ := exportFile(t, b, obj{"exportType": "csv", "filters": obj{"to": "2000-01-01T00:00:00Z"}})
		require.Zero(t, r.Rows)
		require.Len(t, readCSV(t, r.Path), 1, "an empty export still has its header")
	})
}

func TestExportJobEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{db: true})
	_, err := b.pool.Exec(context.Background(), `
		INSERT INTO queue.job_events (job_id, type, state, attempt, message, worker)
		SELECT 'j' || g, 'CLEANUP', 'failed', 1, '=cmd|calc', 'w1' FROM generate_series(1, 250) g`)
	require.NoError(t, err)
	r, _ := exportFile(t, b, obj{"exportType": "csv", "filters": obj{"source": "job_events", "state": "failed"}, "columns": []string{"job_id", "message", "at"}})
	require.Equal(t, int64(250), r.Rows)
	require.Equal(t, "job_events", r.Source)
	records := readCSV(t, r.Path)
	require.Len(t, records, 251)
	require.Equal(t, []string{"job_id", "message", "at"}, records[0])
	require.Equal(t, "'=cmd|calc", records[1][1], "a value a spreadsheet would run as a formula is defused")
}

// TestExportMemoryIsBounded exports 200,000 rows (about 95 MB of CSV) in a separate
// process and compares that process's peak RSS (VmHWM) with exporting 50,000 rows of the
// same table: streaming means the peak does not grow with the row count. (The baseline
// is that large because excelize keeps up to 16 MiB of sheet in memory before it spills
// to a temporary file; 50,000 rows are past that.)
func TestExportMemoryIsBounded(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("exports 200,000 rows")
	}
	b := setup(t, setupOpts{db: true})
	insertJobs(t, b.pool, 200_000, 300)
	// A quarter of them get their own type, so a filter gives the baseline export.
	_, err := b.pool.Exec(context.Background(), `UPDATE queue.jobs SET type = 'FILE_PROCESS' WHERE seq % 4 = 0`)
	require.NoError(t, err)
	dbURL := b.pool.Config().ConnString()

	for _, format := range []string{"csv", "json", "xlsx"} {
		small, smallRSS := exportInChild(t, dbURL, b.cfg.ExportDir, format, "FILE_PROCESS")
		large, largeRSS := exportInChild(t, dbURL, b.cfg.ExportDir, format, "")
		require.Equal(t, int64(50_000), small.Rows)
		require.Equal(t, int64(200_000), large.Rows)
		t.Logf("%s: 50,000 rows (%d bytes) peak RSS %d MiB; 200,000 rows (%d bytes) peak RSS %d MiB",
			format, small.Bytes, smallRSS>>20, large.Bytes, largeRSS>>20)
		if format != "xlsx" { // xlsx is zip-compressed
			require.Greater(t, large.Bytes, int64(60<<20))
		}
		// Four times the rows (about 75 MB more to write) may cost at most GC noise and
		// excelize's chunk buffer, never the data.
		require.Less(t, largeRSS-smallRSS, int64(24<<20), "%s: memory grew with the row count", format)
		require.Less(t, largeRSS, int64(160<<20), format)
		require.NoError(t, os.Remove(large.Path))
		require.NoError(t, os.Remove(small.Path))
	}
}

// exportInChild runs TestExportMemoryChild in a new process of this test binary and
// returns its result and peak resident set size in bytes. The child reads its own VmHWM:
// wait4's ru_maxrss would also count the parent's memory, inherited across fork+exec.
func exportInChild(t *testing.T, dbURL, exportDir, format, jobType string) (ExportResult, int64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestExportMemoryChild$", "-test.count=1")
	spec, err := json.Marshal(obj{"db": dbURL, "dir": exportDir, "format": format, "type": jobType})
	require.NoError(t, err)
	cmd.Env = append(os.Environ(), "EXPORT_MEMORY_CHILD="+string(spec))
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	var child struct {
		Result  ExportResult
		PeakRSS int64
	}
	found := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "EXPORT_RESULT "); ok {
			require.NoError(t, json.Unmarshal([]byte(line), &child))
			found = true
		}
	}
	require.NoError(t, cmd.Wait())
	require.True(t, found, "the child printed no result")
	require.Positive(t, child.PeakRSS)
	return child.Result, child.PeakRSS
}

// peakRSS is this process's VmHWM in bytes.
func peakRSS(t *testing.T) int64 {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib)
			require.NoError(t, err)
			return kib << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// TestExportMemoryChild is the child process of TestExportMemoryIsBounded; it does
// nothing in a normal run.
func TestExportMemoryChild(t *testing.T) {
	t.Parallel()
	spec := os.Getenv("EXPORT_MEMORY_CHILD")
	if spec == "" {
		t.Skip("runs only as TestExportMemoryIsBounded's child process")
	}
	var s struct{ DB, Dir, Format, Type string }
	require.NoError(t, json.Unmarshal([]byte(spec), &s))
	pool, err := pgxpool.New(context.Background(), s.DB)
	require.NoError(t, err)
	defer pool.Close()
	h := exportKind(Deps{Settings: Settings{ExportDir: s.Dir}, Pool: pool, Logger: quietLogger()})
	filters := obj{}
	if s.Type != "" {
		filters["type"] = s.Type
	}
	res, err := run(t, h, obj{"exportType": s.Format, "filters": filters})
	require.NoError(t, err)
	line, err := json.Marshal(obj{"result": res, "peakRSS": peakRSS(t)})
	require.NoError(t, err)
	_, err = fmt.Fprintf(os.Stdout, "\nEXPORT_RESULT %s\n", line)
	require.NoError(t, err)
}
