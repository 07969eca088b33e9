"""Provider onboarding: applications, NPI/license/facility checks, the verification queue."""
