import { json } from '@sveltejs/kit';

/** Liveness of the dashboard server itself (it does not depend on the FastAPI service). */
export function GET() {
	return json({ status: 'ok' });
}
