"""`clipsearch serve`'s web layer: a FastAPI app (`app.create_app`) over one library. An edge like `indexer.cli`:
it imports `retrieval`, never the other way, and nothing outside it imports FastAPI."""
