package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgqueue/queue/db"
	"github.com/pgqueue/queue/internal/api"
	"github.com/pgqueue/queue/internal/jobs"
	"github.com/pgqueue/queue/internal/kinds"
	"github.com/pgqueue/queue/internal/queue"
	"github.com/pgqueue/queue/internal/testutil"
	"github.com/pgqueue/queue/internal/worker"
)

// invoiceData is a job type this test adds: one declaration, no migration.
type invoiceData struct {
	InvoiceID string `json:"invoiceId" validate:"required,max=64"`
	Copies    int    `json:"copies" validate:"omitempty,min=1,max=10"`
}

func (invoiceData) Kind() string { return "INVOICE_PDF" }

// A type added in code (one kinds.Define, one line in the registry) runs end to end from
// the API, from SQL and from the Go client, with its rules checked at each door; an
// unknown type is still refused with a field error.
func TestANewTypeNeedsNoMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := testutil.NewEnv(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	var mu sync.Mutex
	ran := map[string]invoiceData{}
	invoices := kinds.Define("INVOICE_PDF", func(_ context.Context, job *kinds.Job, d *invoiceData) (any, error) {
		mu.Lock()
		ran[job.ID] = *d
		mu.Unlock()
		return map[string]int{"pages": d.Copies}, nil
	})
	reg := jobs.Builtin(jobs.Deps{})
	reg.Add(invoices) // the one registration line

	client, err := queue.NewClient(env.Pool, queue.ClientConfig{Kinds: reg})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	srv, err := api.New(api.Deps{Pool: env.Pool, Client: client, Logger: quiet})
	require.NoError(t, err)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	w, err := worker.New(env.Pool, reg, worker.Config{PollInterval: 20 * time.Millisecond, RemoveOnComplete: -1, RemoveOnFail: -1, Logger: quiet})
	require.NoError(t, err)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })

	post := func(body string) (int, map[string]any) {
		resp, err := http.Post(ts.URL+"/api/queue/jobs", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var m map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		return resp.StatusCode, m
	}
	status, fromAPI := post(`{"type":"INVOICE_PDF","data":{"invoiceId":"inv-1","copies":2}}`)
	require.Equal(t, http.StatusCreated, status, fromAPI)
	status, bad := post(`{"type":"INVOICE_PDF","data":{"invoiceId":"inv-2","copies":11}}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, fieldsOf(bad), "data.copies", "the new type's rules at the API")
	status, unknown := post(`{"type":"INVOICE_PNG","data":{}}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, []string{"type"}, fieldsOf(unknown))

	var fromSQL string
	require.NoError(t, env.Pool.QueryRow(ctx, `SELECT queue.enqueue('INVOICE_PDF', '{"invoiceId":"inv-3","copies":1}')`).Scan(&fromSQL))

	public := db.NewClient(env.Pool, db.Config{Kinds: reg})
	t.Cleanup(public.Close)
	tx, err := env.Pool.Begin(ctx)
	require.NoError(t, err)
	res, err := public.Enqueue(ctx, tx, invoiceData{InvoiceID: "inv-4", Copies: 3}, db.Options{})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	_, err = public.Enqueue(ctx, env.Pool, invoiceData{}, db.Options{})
	var v *db.ValidationError
	require.ErrorAs(t, err, &v)
	require.Equal(t, "data.invoiceId", v.Problems[0].Field, "the new type's rules in the Go client")

	for id, invoice := range map[string]string{fromAPI["id"].(string): "inv-1", fromSQL: "inv-3", res.Job.ID: "inv-4"} {
		require.Eventually(t, func() bool {
			j, err := client.Get(ctx, id)
			return err == nil && j.State == queue.StateCompleted
		}, 10*time.Second, 10*time.Millisecond, invoice)
		mu.Lock()
		require.Equal(t, invoice, ran[id].InvoiceID, "the handler got the decoded data")
		mu.Unlock()
	}
	var names []string
	resp, err := http.Get(ts.URL + "/api/openapi.json")
	require.NoError(t, err)
	defer resp.Body.Close()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Enum []string `json:"enum"`
			} `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	names = doc.Components.Schemas["JobType"].Enum
	require.Contains(t, names, "INVOICE_PDF", "the served document lists the new type")
}

func fieldsOf(m map[string]any) []string {
	var out []string
	e, _ := m["error"].(map[string]any)
	details, _ := e["details"].([]any)
	for _, d := range details {
		out = append(out, d.(map[string]any)["field"].(string))
	}
	return out
}
