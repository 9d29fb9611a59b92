/*
 * Business Rule "Bridge: interaction changed" on interaction: When after, Update,
 * Advanced, Order 1000, Condition:
 *     (current.queue.external == true || !current.correlation_id.nil()) &&
 *     new BridgeAwaEvent().changed(current, previous)
 * correlation_id is set on the interactions the bridge made (the offer API sets no queue on
 * the document). Sends closed (Closed Complete) and abandoned (Closed Abandoned), and any
 * other change of a field the bridge reads.
 */
(function executeRule(current, previous) {
    new BridgeAwaEvent().send('interaction.updated', current);
})(current, previous);
