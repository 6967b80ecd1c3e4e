package queue_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/pgqueue/queue"

func repoRoot(t *testing.T) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(here)))
}

// The engine knows job types only through the kinds contract: neither the engine nor
// anything it imports is a job type (or the API, or the public client built on top).
func TestEngineImportsNoJobType(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("go", "list", "-deps", "./internal/queue", "./internal/worker")
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	require.NoError(t, err)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, module+"/internal/kinds", "the walk sees the engine's own imports")
	for _, dep := range deps {
		for _, forbidden := range []string{"/internal/jobs", "/internal/notifications", "/internal/api", "/internal/results", "/internal/config", "/db"} {
			require.NotEqual(t, module+forbidden, dep, "the engine imports %s", dep)
		}
	}
}

// Every statement that changes a job's state is in sql/queries and is run from
// internal/queue: no other package uses the generated jobs statements, and no other Go
// file writes queue.jobs itself. (The benchmark builds its backlogs with a bulk INSERT
// of its own, in its own throwaway database.)
func TestOnlyTheEngineChangesJobs(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	writes := regexp.MustCompile(`(?i)(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+queue\.jobs\b`)
	storeImport := `"` + module + `/internal/store"`
	var checked int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.Dir(rel)
		if dir == "internal/queue" || dir == "internal/store" || dir == "cmd/bench" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		require.False(t, writes.Match(b), "%s writes queue.jobs itself", rel)
		if strings.Contains(string(b), storeImport) {
			// The notifications inbox has its own statements in the store; nothing else.
			require.Equal(t, "internal/notifications", dir, "%s imports the generated statements", rel)
			for _, m := range regexp.MustCompile(`store\.New\([^)]*\)\.(\w+)`).FindAllStringSubmatch(string(b), -1) {
				require.True(t, strings.HasPrefix(m[1], "Notification"), "%s runs %s", rel, m[1])
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, checked, 50, "the walk read the repository")
}
