package main

import "context"

// Backup and restore need nqlite's snapshots (a node writes a consistent
// SQLite file to the JetStream Object Store). Until that lands, the shell's
// .backup/.restore and the backup/restore subcommands say so and fail with
// exit code 1. This file is the place for them.

// errNeedsSnapshots is the error of backup and restore.
const errNeedsSnapshots = "not available yet: needs the snapshot feature (nqlite snapshots to the Object Store have not landed)"

// backup writes a snapshot of the session's database to file.
func backup(file string) error {
	return failedf("backup to %s: %s", file, errNeedsSnapshots)
}

// restore replaces the session's database with the snapshot in file.
func restore(file string) error {
	return failedf("restore from %s: %s", file, errNeedsSnapshots)
}

// backupCommand is "nqctl backup FILE".
type backupCommand struct{ env *env }

// Run runs the command.
func (c *backupCommand) Run(ctx context.Context, args []string) error {
	return c.run(ctx, args, "backup", "Writes a snapshot of the database to FILE.", backup)
}

// restoreCommand is "nqctl restore FILE".
type restoreCommand struct{ env *env }

// Run runs the command.
func (c *restoreCommand) Run(ctx context.Context, args []string) error {
	return (&backupCommand{env: c.env}).run(ctx, args, "restore", "Restores the database from the snapshot in FILE.", restore)
}

func (c *backupCommand) run(_ context.Context, args []string, name, what string, f func(string) error) error {
	fs := c.env.flagSet(name, "FILE", what+"\n\n"+errNeedsSnapshots+".")
	c.env.opts.conn.register(fs)
	rest, err := c.env.parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		fs.Usage()
		return errUsagePrinted
	}
	if err := c.env.opts.conn.validate(); err != nil {
		return err
	}
	return f(rest[0])
}
