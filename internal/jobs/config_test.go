package jobs_test

import (
	"github.com/pgqueue/queue/internal/config"
	"github.com/pgqueue/queue/internal/jobs"
)

// The in-package tests build their settings from an environment through internal/config,
// as the worker does; config imports jobs, so the link is made from here.
func init() {
	jobs.SettingsFromEnv = func(env map[string]string) (jobs.Settings, error) {
		cfg, err := config.LoadFrom(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			return jobs.Settings{}, err
		}
		if err := cfg.EnsureDirs(); err != nil {
			return jobs.Settings{}, err
		}
		return cfg.JobSettings(), nil
	}
}
