"""ETL service: generates or ingests wine rows, stores them in MongoDB and forwards them to serving."""
