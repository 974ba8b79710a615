ALTER TABLE coin_inventory
    ALTER COLUMN public_key_blob SET STORAGE EXTENDED,
    ALTER COLUMN signature_blob SET STORAGE EXTENDED;
