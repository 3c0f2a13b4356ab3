// Package snapshot will take consistent SQLite snapshots to the JetStream
// Object Store, restore them, and purge the stream entries they cover. It
// is empty until that work lands; see the project's issues.
package snapshot
