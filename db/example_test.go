package db_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgqueue/queue/db"
	"github.com/pgqueue/queue/internal/testutil"
)

// exampleURL is a migrated database of this test binary; in an application it is the
// session-mode DATABASE_URL of the queue's database.
var exampleURL string

func TestMain(m *testing.M) {
	u, drop, err := testutil.MainDatabase()
	if err != nil {
		fmt.Fprintln(os.Stderr, "db tests:", err)
		os.Exit(2)
	}
	exampleURL = u
	code := m.Run()
	drop()
	os.Exit(code)
}

// WelcomeEmail is an application's own struct for EMAIL_SEND's data: it marshals to the
// data object and names the job type.
type WelcomeEmail struct {
	To       string `json:"to"`
	Subject  string `json:"subject"`
	Template string `json:"template"`
}

func (WelcomeEmail) Kind() string { return "EMAIL_SEND" }

// An order and its confirmation e-mail commit together, or neither exists.
func ExampleClient_Enqueue() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	client := db.NewClient(pool, db.Config{})
	defer client.Close()

	tx, err := pool.Begin(ctx)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	// ... the application's own writes on tx ...
	res, err := client.Enqueue(ctx, tx, WelcomeEmail{To: "ann@example.com", Subject: "Your order", Template: "welcome"},
		db.Options{Priority: db.PriorityHigh, JobID: "order-42-mail"})
	if err != nil {
		panic(err)
	}
	if err := tx.Commit(ctx); err != nil { // workers are woken at the commit
		panic(err)
	}
	fmt.Println(res.Job.ID, res.Job.Type, res.Job.Queue, res.Job.State, res.Created)

	// Enqueueing the same JobID again creates nothing while the job exists.
	again, err := client.Enqueue(ctx, pool, WelcomeEmail{To: "ann@example.com", Subject: "Your order", Template: "welcome"},
		db.Options{JobID: "order-42-mail"})
	if err != nil {
		panic(err)
	}
	fmt.Println(again.Created)
	// Output:
	// order-42-mail EMAIL_SEND default waiting true
	// false
}

// A rolled-back transaction leaves no job behind.
func ExampleClient_Enqueue_rollback() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	client := db.NewClient(pool, db.Config{})
	defer client.Close()

	tx, err := pool.Begin(ctx)
	if err != nil {
		panic(err)
	}
	res, err := client.Enqueue(ctx, tx, WelcomeEmail{To: "bob@example.com", Subject: "Hi", Template: "welcome"},
		db.Options{Queue: "emails", Delay: time.Hour})
	if err != nil {
		panic(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		panic(err)
	}
	_, err = client.Get(ctx, res.Job.ID)
	fmt.Println(errors.Is(err, db.ErrNotFound))
	// Output: true
}

// Invalid data or options are refused before anything is written, each problem named.
func ExampleValidationError() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	client := db.NewClient(pool, db.Config{})
	defer client.Close()

	_, err = client.Enqueue(ctx, pool, WelcomeEmail{To: "nobody", Subject: "Hi", Template: "welcome"},
		db.Options{Priority: 42})
	var v *db.ValidationError
	if errors.As(err, &v) {
		for _, p := range v.Problems {
			fmt.Printf("%s: %s\n", p.Field, p.Message)
		}
	}
	// Output:
	// data.to: must be an e-mail address
	// options.priority: must be between 1 and 20
}

// Data given as JSON, for a type chosen at run time.
func ExampleRaw() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	client := db.NewClient(pool, db.Config{})
	defer client.Close()

	res, err := client.Enqueue(ctx, pool, db.Raw{Type: "CLEANUP", Data: []byte(`{"targetType":"temp_files","olderThan":86400000}`)},
		db.Options{Priority: db.PriorityLow, RemoveOnComplete: db.RemoveAtOnce()})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Job.Type, res.Job.Priority)
	// Output: CLEANUP 1
}

// An SMTP relay takes 10 messages a second and 2 connections at once, however many
// workers send; each customer gets one message at a time, in fair turns with the others.
func ExampleClient_SetQueueLimits() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	client := db.NewClient(pool, db.Config{})
	defer client.Close()

	q, err := client.SetQueueLimits(ctx, "smtp", db.Limits{
		Concurrency:      db.Concurrency(2),
		Rate:             db.Rate(10, time.Second),
		GroupConcurrency: db.Concurrency(1),
		Fair:             db.On(),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(q.Name, *q.Concurrency, q.Rate.Limit, time.Duration(q.Rate.Period)*time.Millisecond, *q.GroupConcurrency, q.Fair)

	res, err := client.Enqueue(ctx, pool, WelcomeEmail{To: "cy@example.com", Subject: "Invoice", Template: "welcome"},
		db.Options{Queue: "smtp", Group: "customer-42"})
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Job.Queue, res.Job.Group, res.Job.State)

	// Zero fields keep their setting; a limit goes only when asked to.
	q, err = client.SetQueueLimits(ctx, "smtp", db.Limits{Rate: db.NoRateLimit()})
	if err != nil {
		panic(err)
	}
	fmt.Println(q.Rate == nil, *q.Concurrency, q.Fair)
	// Output:
	// smtp 2 10 1s 1 true
	// smtp customer-42 waiting
	// true 2 true
}
