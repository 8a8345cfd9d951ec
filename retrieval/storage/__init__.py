"""The store, the library's source of truth: schema, ordered migrations, plain records, `Store`."""
