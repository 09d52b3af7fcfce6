"""The reference scenario's example: an XGBoost regressor on the wine-quality data."""
