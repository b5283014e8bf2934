/** The three cases the dashboard shows, and how to present their predictions and metrics. */
export const CASES = {
	tfd: {
		key: 'tfd',
		title: 'Transaction Fraud Detection',
		topic: 'transaction_fraud_detection',
		summary: 'Scores card transactions for fraud as they stream in; learns from each labelled one.',
		metrics: { roc_auc: 'ROC AUC', f1: 'F1', precision: 'Precision', recall: 'Recall', accuracy: 'Accuracy' },
		/** @param {Record<string, any>} p */
		describe: (p) => `${p.is_fraud ? 'fraud' : 'legitimate'} (p = ${formatNumber(p.fraud_probability, 3)})`,
		/** @param {any} t */
		truth: (t) => (t === null || t === undefined ? '—' : t ? 'fraud' : 'legitimate')
	},
	eta: {
		key: 'eta',
		title: 'Estimated Time of Arrival',
		topic: 'estimated_time_of_arrival',
		summary: 'Predicts the travel time of Houston-area trips; learns from each completed trip.',
		metrics: { mae: 'MAE (s)', rmse: 'RMSE (s)', r2: 'R²' },
		describe: (p) => `${formatNumber(p.travel_time_seconds / 60, 1)} min`,
		truth: (t) => (t === null || t === undefined ? '—' : `${formatNumber(t / 60, 1)} min`)
	},
	ecci: {
		key: 'ecci',
		title: 'E-Commerce Customer Interactions',
		topic: 'e_commerce_customer_interactions',
		summary: 'Clusters shopping-session events online into customer behaviour segments.',
		metrics: { silhouette: 'Silhouette (lower is tighter)' },
		describe: (p) => `cluster ${p.cluster}`,
		truth: () => '—'
	}
};

export const CASE_KEYS = Object.keys(CASES);

/** The FastAPI endpoints under /api/v1/<case>/ that the proxy lets through, with their methods. */
export const PROXY_ROUTES = {
	status: ['GET'],
	metrics: ['GET'],
	sample: ['GET'],
	predictions: ['GET'],
	predict: ['POST'],
	learn: ['POST']
};

/**
 * @param {number | null | undefined} value
 * @param {number} digits
 */
export function formatNumber(value, digits = 3) {
	if (value === null || value === undefined || Number.isNaN(value)) return '—';
	return Number(value).toFixed(digits);
}
