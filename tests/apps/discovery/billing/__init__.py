"""A package whose tasks module declares its tasks on a Blueprint (it does not import the App)."""
