// Command migrate applies the queue schema's embedded goose migrations.
//
//	migrate up       apply every pending migration (idempotent)
//	migrate down     undo the latest migration
//	migrate status   list migrations and whether each is applied
//	migrate version  print the current schema version
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/pressly/goose/v3"

	"github.com/pgqueue/queue/internal/config"
	"github.com/pgqueue/queue/migrations"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "migrate:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: migrate up|down|status|version")
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if args[0] == "up" {
		if err := createDatabaseIfMissing(ctx, cfg.DatabaseURL); err != nil {
			return err
		}
	}
	db, err := sql.Open("pgx", cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	p, err := migrations.NewProvider(db)
	if err != nil {
		return err
	}

	switch args[0] {
	case "up":
		results, err := p.Up(ctx)
		for _, r := range results {
			fmt.Printf("applied %s (%s)\n", r.Source.Path, r.Duration)
		}
		if err != nil {
			return err
		}
		v, err := p.GetDBVersion(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("schema at version %d\n", v)
	case "down":
		r, err := p.Down(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("undid %s (%s)\n", r.Source.Path, r.Duration)
	case "status":
		statuses, err := p.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range statuses {
			at := "pending"
			if s.State == goose.StateApplied {
				at = "applied " + s.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
			}
			fmt.Printf("%5d  %-30s %s\n", s.Source.Version, s.Source.Path, at)
		}
	case "version":
		v, err := p.GetDBVersion(ctx)
		if err != nil {
			return err
		}
		fmt.Println(v)
	default:
		return fmt.Errorf("unknown command %q: use up, down, status or version", args[0])
	}
	return nil
}

// createDatabaseIfMissing creates the database DATABASE_URL names when the server says it
// does not exist, so that `migrate up` is the only set-up step on a fresh server.
func createDatabaseIfMissing(ctx context.Context, databaseURL string) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err == nil {
		return conn.Close(ctx)
	}
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || pg.Code != "3D000" {
		return fmt.Errorf("connect to DATABASE_URL: %w", err)
	}
	cc, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return err
	}
	name := cc.Database
	cc.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("database %q does not exist and the postgres database is unreachable to create it: %w", name, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	fmt.Printf("created database %s\n", name)
	return nil
}
