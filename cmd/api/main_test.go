package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/testutil"
)

// buildAPI compiles this command once per test binary.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
)

func buildAPI(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "api-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "api")
		buildOut, buildErr = exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	})
	require.NoError(t, buildErr, string(buildOut))
	return binPath
}

func start(t *testing.T, env ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(buildAPI(t))
	cmd.Env = append(os.Environ(), env...)
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

func TestServesAndStopsGracefully(t *testing.T) {
	t.Parallel()
	port := testutil.FreePort(t)
	cmd, out := start(t, "DATABASE_URL="+testutil.NewMigratedDatabase(t), "PORT="+strconv.Itoa(port),
		"API_KEYS=", "API_BIND=", "LOG_FORMAT=text", "REDIS_URL=redis://127.0.0.1:1/0")
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	require.Eventually(t, func() bool {
		res, err := http.Get(base + "/api/health")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, out.String())
	require.Contains(t, out.String(), "API_KEYS is not set")

	res, err := http.Get(base + "/api/ready")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, "Redis down is reported, still 200")

	// The served OpenAPI document names the job types this binary accepts: the built-in
	// kinds it registers.
	res, err = http.Get(base + "/api/openapi.json")
	require.NoError(t, err)
	var doc struct {
		Components struct {
			Schemas struct {
				JobType struct {
					Enum []string `json:"enum"`
				} `json:"JobType"`
			} `json:"schemas"`
		} `json:"components"`
	}
	err = json.NewDecoder(res.Body).Decode(&doc)
	res.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.ElementsMatch(t, jobs.Builtin(jobs.Deps{}).Names(), doc.Components.Schemas.JobType.Enum)
	require.Contains(t, doc.Components.Schemas.JobType.Enum, jobs.TypeCleanup)

	// A wait in flight is answered when the server shuts down, not outwaited.
	waitDone := make(chan int, 1)
	go func() {
		res, err := http.Post(base+"/api/queue/jobs", "application/json",
			bytes.NewReader([]byte(`{"type":"CLEANUP","data":{"targetType":"temp_files","olderThan":0}}`)))
		if err != nil {
			waitDone <- 0
			return
		}
		res.Body.Close()
		res, err = http.Get(base + "/api/queue/jobs/1/wait?timeout=60s")
		if err != nil {
			waitDone <- 0
			return
		}
		res.Body.Close()
		waitDone <- res.StatusCode
	}()
	time.Sleep(300 * time.Millisecond)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, out.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("api did not stop after SIGTERM:\n%s", out.String())
	}
	require.Equal(t, http.StatusOK, <-waitDone, out.String())
}

func TestRefusesAnOldSchema(t *testing.T) {
	t.Parallel()
	cmd, out := start(t, "DATABASE_URL="+testutil.NewDatabase(t), "PORT="+strconv.Itoa(testutil.FreePort(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.Error(t, err)
		require.Contains(t, out.String(), "migrate up")
	case <-ctx.Done():
		t.Fatal("api started on an empty database")
	}
}

func TestRefusesBadConfig(t *testing.T) {
	t.Parallel()
	cmd, out := start(t, "API_KEYS=a,,b")
	err := cmd.Wait()
	require.Error(t, err)
	require.Contains(t, out.String(), "API_KEYS")
}
