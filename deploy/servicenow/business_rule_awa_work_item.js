/*
 * Business Rule "Bridge: work item changed" on awa_work_item: When after, Update,
 * Advanced, Order 1000, Condition:
 *     current.queue.external == true && new BridgeAwaEvent().changed(current, previous)
 * Sends what the External Event Definitions do not: accepted, rejected, timed out,
 * cancelled (and any other change of a field the bridge reads).
 */
(function executeRule(current, previous) {
    new BridgeAwaEvent().send('awa_work_item.updated', current);
})(current, previous);
