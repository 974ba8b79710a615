DROP TABLE IF EXISTS coin_inventory;
